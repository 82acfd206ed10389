#!/bin/sh
# mandrill-keys [DIR]: makes the CURVE keys of a docker compose deployment
# once, into DIR (default /keys, a volume): a key pair for the broker and one
# per role (publisher, worker, operator, observer), made by mandrill-ctl
# keygen, and the role directories the broker reads (publishers/, workers/,
# operators/, observers/), each holding its role's public key.
# Run again, it changes nothing: keys are made only while DIR has no
# broker.key_secret, and that file is put in place last, so a run that
# failed half-way leaves no broker key and the next run starts afresh.
# Exit codes: 0 keys there (made now or before); 1 a key could not be made.
set -eu
dir="${1:-/keys}"
if [ -f "$dir/broker.key_secret" ]; then
    echo "mandrill-keys: $dir has its keys already"
    exit 0
fi
new="$dir/.new.$$"
rm -rf "$dir"/.new.*
mkdir -p "$new"
for name in broker publisher worker operator observer; do
    mandrill-ctl keygen "$name" --dir "$new" >/dev/null || { rm -rf "$new"; exit 1; }
done
for role in publisher worker operator observer; do
    rm -rf "$dir/${role}s"
    mkdir -p "$new/${role}s"
    cp "$new/$role.key" "$new/${role}s/"
    mv "$new/${role}s" "$dir/"
    mv "$new/$role.key" "$new/$role.key_secret" "$dir/"
done
mv "$new/broker.key" "$dir/"
mv "$new/broker.key_secret" "$dir/"
rmdir "$new"
echo "mandrill-keys: made the broker's and the roles' keys in $dir"
