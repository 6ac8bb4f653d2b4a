#!/usr/bin/env bash
# Make what a TLS + node-authenticated Flower deployment needs (for testing or a lab):
#   DIR/ca.crt, ca.key                    a self-signed certificate authority
#   DIR/server.pem, server.key            the SuperLink's certificate (SAN: localhost, 127.0.0.1, $SUPERLINK_HOSTS)
#   DIR/supernode-<i>, supernode-<i>.pub  one EC (secp384r1) key pair per SuperNode, for --enable-supernode-auth
# Usage: scripts/make_certificates.sh [DIR] [NUM_SUPERNODES]
#   SUPERLINK_HOSTS="superlink.lab 10.0.0.5" scripts/make_certificates.sh certificates 3
set -euo pipefail
DIR="${1:-certificates}"
NODES="${2:-2}"
mkdir -p "$DIR"
cd "$DIR"

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for host in ${SUPERLINK_HOSTS:-}; do
  if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then san="$san,IP:$host"; else san="$san,DNS:$host"; fi
done

openssl genrsa -out ca.key 4096 2>/dev/null
openssl req -new -x509 -key ca.key -sha256 -days 365 -subj "/O=fedsec/CN=fedsec test CA" -out ca.crt

openssl genrsa -out server.key 4096 2>/dev/null
openssl req -new -key server.key -subj "/O=fedsec/CN=fedsec SuperLink" -out server.csr
printf "subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n" \
  "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -sha256 \
  -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl

for ((i = 0; i < NODES; i++)); do
  rm -f "supernode-$i" "supernode-$i.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "" -f "supernode-$i"
done
chmod 600 ./*.key supernode-*[0-9]
echo "wrote $(pwd): ca.crt server.pem server.key and $NODES SuperNode key pairs (SAN: $san)"
