#!/usr/bin/env bash
# Install script for an activity that fails on purpose: main.sh exits with the code given as its input
# (default 1), after a line on each stream. It shows how POD and `pod` report an execution that ends in error.
set -euo pipefail
cat > main.sh <<'MAIN'
#!/usr/bin/env bash
code="${1:-1}"
echo "about to fail"
echo "failing with exit code $code" >&2
exit "$code"
MAIN
chmod +x main.sh
