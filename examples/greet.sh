#!/usr/bin/env bash
# Install script for an activity that uses its input: main.sh greets "$1" and reports the input's length on stderr.
set -euo pipefail
cat > main.sh <<'MAIN'
#!/usr/bin/env bash
echo "hello ${1:-world}"
echo "input was ${#1} characters" >&2
MAIN
chmod +x main.sh
