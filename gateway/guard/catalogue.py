"""Every string the guard's page shows, in Chinese (`zh`, the default) and English (`en`).

Owns the one message catalogue: `MESSAGES[key] = {"zh": ..., "en": ...}`. The page's HTML names
keys with `data-i18n="key"` and its script with `t("key")`; state values are shown through keys
made of a prefix and the value (`stage_acknowledged`, `bollard_pulled`, ...), listed in
`VALUE_KEYS` so a test can check each value of `gateway.guard.view` has its text. `{n}`-style
fields are filled in by the page. It does not render anything (`static/page.js` does).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from gateway.guard import view

LANGUAGES: Final = ("zh", "en")

_M: dict[str, tuple[str, str]] = {
    # the frame
    "title": ("校门安全", "School gate"),
    "conn_live": ("● 实时", "● Live"),
    "conn_lost": ("✖ 连接中断，正在重连…", "✖ Connection lost, reconnecting…"),
    "conn_connecting": ("… 正在连接", "… Connecting"),
    "lang_switch": ("English", "中文"),
    "none": ("无", "None"),
    "since": ("自 {t}", "since {t}"),
    "for": ("已 {d}", "for {d}"),
    "dur_s": ("{n} 秒", "{n} s"),
    "dur_m": ("{n} 分钟", "{n} min"),
    "dur_h": ("{h} 小时 {m} 分", "{h} h {m} min"),
    "dur_d": ("{d} 天 {h} 小时", "{d} d {h} h"),
    # alarms
    "sec_alarms": ("报警", "Alarms"),
    "no_alarms": ("✔ 没有未复位的报警", "✔ No open alarms"),
    "stage_stored": ("■ 已存储，未送达公安", "■ Stored, not yet at the police"),
    "stage_at_police": ("◆ 已送达公安", "◆ At the police"),
    "stage_acknowledged": ("✔ 公安已确认", "✔ Acknowledged by the police"),
    "stage_escalated": ("▲ 超时未确认，已升级", "▲ Not acknowledged: escalated"),
    "alarm_test": ("测试", "TEST"),
    "test_mode_on": (
        "◆ 测试模式，至 {t}：按下报警按钮只作测试，公安不出警",
        "◆ Test mode until {t}: a press is a test, the police do not dispatch",
    ),
    "alarm_raised": ("触发 {t}", "raised {t}"),
    "alarm_acked": ("{who} 于 {t} 确认", "acknowledged by {who} at {t}"),
    "alarm_escalated": ("{t} 升级", "escalated {t}"),
    "alarm_reset": ("{who} 于 {t} 复位", "reset by {who} at {t}"),
    "alarm_silenced": ("{who} 于 {t} 消音", "siren silenced by {who} at {t}"),
    # the gate
    "sec_bollards": ("升降柱", "Bollards"),
    "bollard_up": ("▲ 升起", "▲ Up"),
    "bollard_down": ("▼ 降下", "▼ Down"),
    "bollard_moving": ("↕ 移动中", "↕ Moving"),
    "bollard_pulled": ("✖ 已拔出，请插回", "✖ Pulled out: put it back"),
    "sec_doors": ("门", "Doors"),
    "door_closed": ("■ 关闭", "■ Closed"),
    "door_open": ("□ 打开", "□ Open"),
    "door_held_open": ("▲ 长时间未关", "▲ Held open"),
    "door_forced": ("✖ 被强行打开", "✖ Forced open"),
    "sec_devices": ("设备", "Devices"),
    "health_online": ("● 在线", "● Online"),
    "health_offline": ("✖ 离线", "✖ Offline"),
    "kind_alarm_box": ("一键报警", "Panic alarm"),
    "kind_bollard": ("升降柱", "Bollard"),
    "kind_access": ("门禁", "Access control"),
    "sec_paths": ("报警上报链路", "Alarm paths"),
    "path_up": ("● 正常", "● Up"),
    "path_down": ("✖ 中断", "✖ Down"),
    "dest_police": ("公安", "Police"),
    "dest_bureau": ("教育局", "Education bureau"),
    "sec_clock": ("时钟", "Clock"),
    "clock_offset": ("校门时钟偏差 {s} 秒", "Gate clock offset {s} s"),
    "clock_offset_unknown": ("校门时钟偏差未知", "Gate clock offset unknown"),
    "clock_synced": ("● 本机时钟已同步", "● Box clock synchronised"),
    "clock_not_synced": ("✖ 本机时钟未同步", "✖ Box clock not synchronised"),
    "clock_sync_unknown": ("? 本机时钟同步未知", "? Box clock sync unknown"),
    # rules (with [rules])
    "sec_rules": ("今日", "Today"),
    "rules_windows": ("开门时段", "Gate windows"),
    "rules_no_windows": ("今日无开门时段", "no gate windows today"),
    "rules_patrols": ("巡更 {done} / {target} 次", "Patrols {done} of {target}"),
    "rules_patrols_met": ("● 已达标", "● Target met"),
    "rules_patrols_short": ("▲ 未达标", "▲ Below target"),
    "rules_violations": ("未处理违规", "Open violations"),
    "rules_violation": ("▲ 违规未处理", "▲ Rule broken"),
    "rules_violation_rule": ("规则 {rule}", "rule {rule}"),
    "rules_overdue": ("逾期台账", "Overdue ledger"),
    "rules_overdue_item": ("✖ 台账逾期", "✖ Ledger overdue"),
    "rules_due": ("{t} 到期", "due {t}"),
    "ledger_device_offline": ("设备离线", "Device offline"),
    "ledger_rule_violation": ("违反规则", "Rule broken"),
    # actions
    "act_reset": ("复位", "Reset"),
    "act_test_press": ("测试按键", "Test press"),
    "act_silence_siren": ("消音", "Silence siren"),
    "dlg_pin": ("PIN 密码", "PIN"),
    "dlg_reason": ("原因（公安确认前复位必填）", "Reason (needed before the police acknowledge)"),
    "dlg_ok": ("确认", "Confirm"),
    "dlg_cancel": ("取消", "Cancel"),
    "done": ("已完成（{who}）", "Done ({who})"),
    "done_test_press": (
        "测试模式已开启（{who}）：请按下报警按钮",
        "Test mode on ({who}): now press the alarm box",
    ),
    "err_pin_wrong": ("PIN 错误，还可尝试 {n} 次", "Wrong PIN: {n} attempts left"),
    "err_locked": ("错误次数过多，请 {s} 秒后再试", "Too many wrong PINs: try again in {s} s"),
    "err_bad_request": ("请求无效", "Invalid request"),
    "err_network": ("无法连接网关", "Cannot reach the gateway"),
    "refused_unknown_alarm": ("该报警已不存在", "That alarm is no longer open"),
    "refused_unknown_box": ("没有这个报警按钮", "No such alarm box"),
    "refused_reason_required": ("公安尚未确认：请填写原因", "Not acknowledged yet: give a reason"),
    "refused_not_allowed_now": ("现在不能执行", "Not allowed now"),
    "refused_daemon_busy": ("网关忙，请重试", "The gateway is busy: try again"),
    "refused_test_mode_on": (
        "测试模式已开启：请直接按下报警按钮",
        "Test mode is already on: press the box",
    ),
}

MESSAGES: Final = MappingProxyType(
    {key: MappingProxyType(dict(zip(LANGUAGES, texts, strict=True))) for key, texts in _M.items()}
)

VALUE_KEYS: Final = MappingProxyType(
    {
        "conn_": ("live", "lost", "connecting"),
        "stage_": view.ALARM_STAGES,
        "bollard_": view.BOLLARD_STATES,
        "door_": view.DOOR_STATES,
        "health_": view.HEALTHS,
        "path_": view.PATH_STATES,
        "refused_": view.REFUSAL_REASONS,
        "act_": ("reset", "test_press", "silence_siren"),
        "dest_": ("police", "bureau"),
        "kind_": ("alarm_box", "bollard", "access"),
        "ledger_": ("device_offline", "rule_violation"),
    }
)
"""Keys the page builds from a prefix and a value; the values of `dest_`, `kind_` and `ledger_`
are open (a name without text is shown as it is: a window rule's `ledger_kind` is the
installer's), the others are closed sets from `gateway.guard.view`."""


def as_json_ready() -> dict[str, dict[str, str]]:
    """Per language, key -> text: what the page loads."""
    return {lang: {key: texts[lang] for key, texts in MESSAGES.items()} for lang in LANGUAGES}
