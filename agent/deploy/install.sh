#!/usr/bin/env bash
# Install the fleetlearn agent on a Linux device (run as root).
#
#   sudo agent/deploy/install.sh [WHEEL_OR_SPEC]
#
# WHEEL_OR_SPEC defaults to 'fleetlearn[agent]'. Afterwards: put the config, fleet key, data and
# artifacts in place (the script prints where) and `systemctl enable --now fleetlearn-agent`.
set -euo pipefail

SPEC="${1:-fleetlearn[agent]}"
PREFIX=/opt/fleetlearn
ETC=/etc/fleetlearn
VAR=/var/lib/fleetlearn
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "$0")" && pwd)"

if [[ $EUID -ne 0 ]]; then echo "install.sh: run as root" >&2; exit 1; fi
command -v "$PYTHON" >/dev/null || { echo "install.sh: $PYTHON not found" >&2; exit 1; }
# stock onnxruntime has wheels for x86_64 and aarch64 (Raspberry Pi, Jetson), CPython 3.11-3.13
"$PYTHON" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' ||
  { echo "install.sh: $PYTHON is not CPython 3.11-3.13; set PYTHON=python3.11 (or 3.12, 3.13)" >&2; exit 1; }

id fleetlearn >/dev/null 2>&1 || useradd --system --home-dir "$VAR" --shell /usr/sbin/nologin fleetlearn
install -d -m 0755 "$PREFIX"
install -d -m 0750 -o root -g fleetlearn "$ETC"
install -d -m 0750 -o fleetlearn -g fleetlearn "$VAR" "$VAR/state"
install -d -m 0755 "$VAR/data" "$VAR/artifacts"

"$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --upgrade pip
"$PREFIX/venv/bin/pip" install "$SPEC"
if "$PREFIX/venv/bin/python" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') else 1)"; then
  echo "install.sh: warning: torch is installed in the agent venv; the agent never needs it" >&2
fi

[[ -f "$ETC/agent.toml" ]] || install -m 0640 -o root -g fleetlearn "$HERE/../agent.example.toml" "$ETC/agent.toml"
install -m 0644 "$HERE/fleetlearn-agent.service" /etc/systemd/system/fleetlearn-agent.service
systemctl daemon-reload 2>/dev/null || true

cat <<MSG
Installed. Before starting:
  1. edit $ETC/agent.toml  (device_id, fleet, model_id, broker url + credentials;
     set state_dir = "$VAR/state", data_dir = "$VAR/data", artifacts_dir = "$VAR/artifacts")
  2. copy the fleet public key to $ETC/fleet.pub, broker CA/cert/key to $ETC/ (mode 0640, group fleetlearn)
  3. copy the model artifacts (fleetlearn export) to $VAR/artifacts/
  4. put the device's data in $VAR/data/train.npz (x float32, y int64) [+ test.npz]
  5. systemctl enable --now fleetlearn-agent && journalctl -u fleetlearn-agent -f
MSG
