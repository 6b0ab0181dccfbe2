"""Every text of the printed daily inspection report, in Chinese with English beside it.

Owns `TEXTS[key] = (zh, en)` for the report's headings, column names and values; the guard's
page has its own catalogue (gateway.guard.catalogue, a layer above the rules). It renders
nothing (gateway.rules.report_html does).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

_T: dict[str, tuple[str, str]] = {
    "title": ("每日巡查报告", "Daily inspection report"),
    "period": ("统计时段", "Period"),
    "school": ("学校 / 网关", "School / gateway"),
    "built": ("生成时间", "Built"),
    "sec_devices": ("设备在线情况", "Devices online"),
    "sec_clocks": ("设备时钟", "Device clocks"),
    "sec_gateway_clock": ("网关时钟同步", "Gateway clock synchronisation"),
    "sec_paths": ("上报链路", "Broker paths"),
    "sec_store": ("本地存储", "Local store"),
    "sec_alarms": ("报警及确认", "Alarms and acknowledgements"),
    "sec_faults": ("隐患台账", "Fault ledger"),
    "sec_violations": ("规则违反", "Rule violations"),
    "sec_patrols": ("巡逻", "Patrols"),
    "sec_drills": ("应急演练", "Drills"),
    "device": ("设备", "Device"),
    "kind": ("类型", "Kind"),
    "location": ("位置", "Location"),
    "health": ("当前状态", "Now"),
    "online_fraction": ("在线率", "Online"),
    "offset": ("时钟偏差", "Offset"),
    "corrected": ("已校时", "Corrected"),
    "synchronised": ("已同步", "Synchronised"),
    "max_error": ("最大误差", "Max error"),
    "path": ("链路", "Path"),
    "up_fraction": ("可用率", "Up"),
    "last_puback": ("最近送达", "Last delivered"),
    "last_ack": ("最近确认", "Last acknowledged"),
    "integrity": ("完整性检查", "Integrity check"),
    "file_size": ("存储文件", "Store file"),
    "disk_free": ("磁盘剩余", "Disk free"),
    "backlog": ("待发送", "Backlog"),
    "at": ("时间", "Time"),
    "drill": ("演练", "Drill"),
    "acked_after": ("确认用时", "Acknowledged after"),
    "acked_by": ("确认人", "By"),
    "escalated": ("已升级", "Escalated"),
    "entry": ("编号", "Entry"),
    "what": ("内容", "What"),
    "deadline": ("整改期限", "Repair by"),
    "state": ("状态", "State"),
    "opened_today": ("本时段新增", "Opened"),
    "closed_today": ("本时段销号", "Closed"),
    "open_now": ("未销号", "Open"),
    "overdue": ("逾期", "Overdue"),
    "mttr": ("平均修复时间", "Mean time to repair"),
    "rule": ("规则", "Rule"),
    "restored": ("已恢复", "Restored"),
    "plan": ("巡逻计划", "Plan"),
    "rounds": ("完成轮次", "Rounds"),
    "required": ("要求", "Required"),
    "missed": ("未完成", "Missed"),
    "quarter": ("季度", "Quarter"),
    "this_quarter": ("本季度演练次数", "Drills this quarter"),
    "started": ("本时段演练", "Drills in period"),
    "missing": ("本季度尚未演练", "No drill yet this quarter"),
    "none": ("无", "None"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "online": ("在线", "online"),
    "offline": ("离线", "offline"),
    "unknown": ("未知", "unknown"),
    "up": ("正常", "up"),
    "down": ("中断", "down"),
    "ok": ("正常", "ok"),
    "not_readable": ("无法读取", "not readable"),
    "signature": ("巡查人签字", "Inspected by (signature)"),
}

TEXTS: Final = MappingProxyType(_T)


def both(key: str) -> str:
    """ "中文 English": the report prints both languages."""
    zh, en = TEXTS[key]
    return f"{zh} {en}"
