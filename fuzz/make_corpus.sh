#!/usr/bin/env bash
#   Rewrite the seed corpus fuzz/corpus/: one file per input, frames split by
#   newlines as fuzz_mmp.c expects ("SIGNATURE\nCOMMAND\nBODY"). Valid
#   messages of every command in both directions, plus typical bad ones.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/corpus"
mkdir -p "$dir"
rm -f "$dir"/seed-*
n=0
seed () {
    n=$((n + 1))
    printf 'MMP1\n%s\n%s' "$1" "$2" > "$(printf '%s/seed-%02d-%s' "$dir" "$n" "$3")"
}
U1=0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f
U2=A0B1C2D3-E4F5-4A6B-8C7D-8E9FA0B1C2D3
REQ="{\"message_id\":\"$U1\",\"instance_name\":\"cattle-ab12\",\"hostname\":\"cattle-ab12.example.net\",\"attributes\":{\"zone\":\"eu\",\"n\":[1,2.5,true,null]}}"

seed PUBLISH "{\"req\":\"r1\",\"messages\":[$REQ,{\"instance_name\":\"cattle-0\"}]}" publish
seed PUBLISH '{"messages":[{"instance_name":"a"}]}' publish-min
seed PUBACK "{\"message_ids\":[\"$U1\",\"$U2\"],\"duplicates\":[\"$U2\"],\"durability\":\"sync\",\"req\":\"r1\"}" puback
seed ERROR '{"code":"bad_json","reason":"body is not valid JSON","req":"x"}' error
seed STATS '{"req":"s"}' stats
seed STATS '{"published":1,"in_flight":0,"durability":"batch","req":"s"}' stats-reply
seed DEADLETTERS '{"limit":10,"req":"d"}' deadletters
seed DEADLETTERS "{\"total\":1,\"dead_letters\":[{\"message\":$REQ,\"reason\":\"expired\",\"attempts\":5,\"dead_at_ms\":1,\"history\":[]}]}" deadletters-reply
seed REPLAY "{\"message_ids\":[\"$U1\"],\"req\":\"p\"}" replay
seed REPLAYED "{\"replayed\":[\"$U1\"],\"unknown\":[\"$U2\"]}" replayed
seed HELLO '{"credit":100,"name":"worker-1","subscription":"restart"}' hello
seed WELCOME '{"ack_deadline_ms":10000,"heartbeat_ms":1000,"epoch":3}' welcome
seed DELIVER "{\"deliveries\":[{\"delivery_id\":12884901889,\"attempt\":2,\"deadline_ms\":10000,\"steps\":[\"save\"],\"message\":$REQ}]}" deliver
seed CREDIT '{"credit":0}' credit
seed EXTEND '{"delivery_ids":[1,9007199254740991],"extension_ms":5000}' extend
seed EXTENDED '{"ok":[1],"stale":[2],"unknown":[3],"deadline_ms":10000}' extended
seed ACK '{"delivery_ids":[4294967297,4294967298]}' ack
seed ACKED '{"ok":[1],"stale":[],"unknown":[]}' acked
seed NACK '{"delivery_ids":[7],"delay_ms":1000,"reason":"db down"}' nack
seed NACKED '{"ok":[],"stale":[7],"unknown":[]}' nacked
seed PROGRESS '{"delivery_ids":[7],"steps":["restart","save"]}' progress
seed PROGRESSED '{"ok":[7],"stale":[],"unknown":[]}' progressed
seed HEARTBEAT '{}' heartbeat
seed BYE ' { } ' bye
#  Bad ones
seed ACK '{"delivery_ids":[1.5,-1,1e300,9007199254740992]}' bad-numbers
seed ACK '{"delivery_ids":[1],"delivery_ids":[2]}' bad-duplicate-key
seed HELLO '{"credit":1,"name":"a\u0000b"}' bad-nul-escape
seed PUBLISH '{"messages":[{"instance_name":"-x_","hostname":"a..b."}]}' bad-names
seed PUBLISH '{"messages":[{"instance_name":"a","attributes":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{}}}}}}}}}}}}}}}}]}' bad-deep
seed STATS '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[' bad-brackets
seed PROGRESS '{"delivery_ids":[1],"steps":["save","save","restart"]}' bad-steps
seed ACK '{"delivery_ids":[1]} trailing' bad-trailing
seed FROB '{}' bad-command
seed PUBLISH '{"messages":[{"instance_name":"caf\u00e9\ud800","x":"\"\\\/\b\f\n\r\t"}]}' bad-escapes
# Attributes as deep as a DELIVER can carry them (12), and one more: the
# PUBLISH body itself would still be within 16
seed PUBLISH '{"messages":[{"instance_name":"a","attributes":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{}}}}}}}}}}}}}]}' attributes-deepest
seed PUBLISH '{"messages":[{"instance_name":"a","attributes":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{}}}}}}}}}}}}}}]}' bad-attributes-deep
printf 'MMP2\nACK\n{}' > "$dir/seed-90-bad-version"
printf 'XYZ\nACK\n{}' > "$dir/seed-91-bad-signature"
printf 'MMP1\nACK' > "$dir/seed-92-two-frames"
printf 'MMP1' > "$dir/seed-93-one-frame"
printf '' > "$dir/seed-94-empty"
printf 'MMP1\nHELLO\n{"credit":1,"name":"\xff\xfe\xc3"}' > "$dir/seed-95-bad-utf8"
echo "wrote $(ls "$dir" | wc -l) seeds to $dir"
