#!/bin/sh
# One-shot set-up of the compose network (docker-compose.yml, service `init`): the network
# authority and one node per state, each in its own volume, made with the same commands an
# operator runs by hand (docs/deployment.md):
#
#   mla-node authority init    root key, TLS CA, trust-root.json        -> $MLA_NET/authority
#   mla-node node init         keys, config.toml, registration          -> $MLA_NET/<STATE>
#   mla-node authority admit   TLS certificate (keys/tls.pem), directory
#   copy trust-root.json and directory.bin to the node; point the node at the directory service
#
# It does its work once: a finished network is left alone (`docker compose up` runs it at every
# start), and a half-made one (a crash in between) is refused rather than patched up.
# Started as root in the image (to hand the fresh volumes to the unprivileged user), it drops to
# that user before it writes anything.
#
# Settings (environment): MLA_NET (default /net), MLA_STATES (default "AR BR US"), MLA_NETWORK
# (default remja), MLA_AUTHORITY_URL (default https://authority:8444/directory.bin).
set -eu

NET=${MLA_NET:-/net}
STATES=${MLA_STATES:-AR BR US}
NETWORK=${MLA_NETWORK:-remja}
AUTHORITY_URL=${MLA_AUTHORITY_URL:-https://authority:8444/directory.bin}
RUN_AS=mla
DONE="$NET/authority/.network-initialised"

if [ "$(id -u)" = 0 ] && id "$RUN_AS" >/dev/null 2>&1; then
  for folder in "$NET/authority" $(for s in $STATES; do echo "$NET/$s"; done); do
    mkdir -p "$folder"
    chown "$RUN_AS:$RUN_AS" "$folder"
    chmod 0700 "$folder"
  done
  exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups -- "$0" "$@"
fi

if [ -e "$DONE" ]; then
  echo "The network in $NET is already set up ($(cat "$DONE")); nothing to do."
  exit 0
fi
if [ -e "$NET/authority/registry.json" ]; then
  echo "error: $NET/authority holds a network whose set-up did not finish." >&2
  echo "Remove the volumes (docker compose down --volumes) and start again." >&2
  exit 2
fi

mla-node authority init --dir "$NET/authority" --network "$NETWORK"
for state in $STATES; do
  host=$(echo "$state" | tr 'A-Z' 'a-z')
  node="$NET/$state"
  mla-node node init --state "$state" --dir "$node" --endpoint "https://$host:8443" \
    --hostname "$host" --clerk-port 8080
  mla-node authority admit "$node/keys/registration.json" --dir "$NET/authority"
  cp "$NET/authority/trust-root.json" "$node/trust-root.json"
  # In a container the clerk API listens on every address of the container (the host publishes
  # it on 127.0.0.1 only), and the node follows the authority's directory service.
  python - "$node/config.toml" "$AUTHORITY_URL" <<'PY'
import sys
from pathlib import Path

from mla_node.config import load_config
from mla_node.config_text import commented_config

path, url = Path(sys.argv[1]), sys.argv[2]
config = load_config(path)
config = config.model_copy(
    update={
        "clerk_api": config.clerk_api.model_copy(update={"host": "0.0.0.0"}),
        "keys": config.keys.model_copy(update={"directory_url": url}),
    }
)
title = f"mla-node configuration of {config.node.state}'s node in the compose network"
path.write_text(commented_config(config, title=title), encoding="utf-8")
PY
done
# Every admission published a new directory: each node starts from the last one, then follows
# the directory service.
for state in $STATES; do
  cp "$NET/authority/directory.bin" "$NET/$state/directory.bin"
done
date -u +"set up %Y-%m-%dT%H:%M:%SZ for $STATES" > "$DONE"
echo "Network $NETWORK set up in $NET for: $STATES."
echo "Create a clerk token: docker compose exec ar mla-node token create --config /var/lib/mla-node/config.toml --role clerk"
