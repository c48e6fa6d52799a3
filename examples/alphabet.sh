#!/usr/bin/env bash
# Install script for the original POD's test activity: main.sh prints the letters a to z, one every half second.
set -euo pipefail
cat > main.sh <<'MAIN'
#!/usr/bin/env bash
for letter in {a..z}; do
  echo "$letter"
  sleep 0.5
done
MAIN
chmod +x main.sh
