#!/bin/sh
# schoolgate: per-school credentials on RabbitMQ's MQTT plugin (docs/receiving-centre.md).
# RabbitMQ maps MQTT topics to routing keys on the amq.topic exchange with "/" turned into ".",
# so schoolgate/v1/school-1/gate-1/events/alarm is the routing key
# schoolgate.v1.school-1.gate-1.events.alarm. Topic permissions are regular expressions on it.
#
# usage: rabbitmq-topic-permissions.sh SCHOOL GATEWAY PASSWORD   (one gateway)
#        rabbitmq-topic-permissions.sh --receiver NAME PASSWORD   (a console / receiving centre)
set -eu
VHOST=${VHOST:-/}

if [ "$1" = "--receiver" ]; then
  user=$2
  rabbitmqctl add_user "$user" "$3"
  # its own MQTT session queue (mqtt-subscription-<client id>qos1) and the exchange
  rabbitmqctl set_permissions -p "$VHOST" "$user" '^(mqtt-subscription-.*|amq\.topic)$' \
    '^(mqtt-subscription-.*|amq\.topic)$' '^(mqtt-subscription-.*|amq\.topic)$'
  rabbitmqctl set_topic_permissions -p "$VHOST" "$user" amq.topic \
    '^schoolgate\.v1\.([^.]+\.[^.]+\.commands|_probe\..*)$' '^schoolgate\.v1\..*$'
  exit 0
fi

school=$1 gateway=$2
user="$school.$gateway"   # the MQTT username; a "." cannot occur in a school or gateway id
rabbitmqctl add_user "$user" "$3"
rabbitmqctl set_permissions -p "$VHOST" "$user" '^(mqtt-subscription-.*|amq\.topic)$' \
  '^(mqtt-subscription-.*|amq\.topic)$' '^(mqtt-subscription-.*|amq\.topic)$'
# write: only its own events, status, heartbeat and results; read: only its own commands
rabbitmqctl set_topic_permissions -p "$VHOST" "$user" amq.topic \
  "^schoolgate\\.v1\\.$school\\.$gateway\\.(events\\..+|status|heartbeat|results)\$" \
  "^schoolgate\\.v1\\.$school\\.$gateway\\.commands\$"
