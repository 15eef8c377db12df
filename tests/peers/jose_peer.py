"""An independent JOSE implementation (joserfc) for the signed-command interop tests.

    jose_peer.py sign KEY.pem KID      JSON payload on stdin -> compact JWS (EdDSA) on stdout
    jose_peer.py verify PUBLIC_X       compact JWS on stdin -> payload on stdout; exit 1 if refused
    jose_peer.py batch                 a JSON array of token specs on stdin -> a JSON array of
                                       compact tokens on stdout, in the same order

A batch spec: {"payload": OBJECT or "payload_text": STRING, "kid": KID, "alg": ALG, "key": KEY.pem}
with ALG "EdDSA" (signed with KEY.pem), "none" (no signature: the classic downgrade) or
"HS256" with "secret": STRING (e.g. the trusted public key's base64url text, the classic
key-confusion attack). One process signs every message of a test.

KEY.pem is a PKCS#8 Ed25519 private key (as `cabinetd key generate` writes); PUBLIC_X is the
base64url public key of the config's [[security.trusted_key]] (a JWK's "x").
"""

import base64
import json
import sys
import warnings

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OctKey, OKPKey

# joserfc marks "EdDSA" deprecated by RFC 9864 ("Ed25519"); SPEC v1.1 fixes "EdDSA".
warnings.simplefilter("ignore")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(spec: dict) -> str:
    if "payload_text" in spec:
        payload = spec["payload_text"].encode()
    else:
        payload = json.dumps(spec["payload"], separators=(",", ":")).encode()
    alg = spec.get("alg", "EdDSA")
    header = {"alg": alg, "kid": spec["kid"]}
    if alg == "EdDSA":
        key = OKPKey.import_key(open(spec["key"], "rb").read())
        return jws.serialize_compact(header, payload, key, algorithms=["EdDSA"])
    if alg == "HS256":
        key = OctKey.import_key(spec["secret"].encode())
        return jws.serialize_compact(header, payload, key, algorithms=["HS256"])
    if alg == "none":
        return b64(json.dumps(header).encode()) + "." + b64(payload) + "."
    raise ValueError(f"unknown alg {alg}")


def main() -> int:
    mode = sys.argv[1]
    if mode == "batch":
        specs = json.loads(sys.stdin.buffer.read())
        json.dump([make_token(s) for s in specs], sys.stdout)
        return 0
    data = sys.stdin.buffer.read()
    if mode == "sign":
        key = OKPKey.import_key(open(sys.argv[2], "rb").read())
        token = jws.serialize_compact({"alg": "EdDSA", "kid": sys.argv[3]}, data, key, algorithms=["EdDSA"])
        sys.stdout.write(token)
        return 0
    if mode == "verify":
        key = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": sys.argv[2]})
        try:
            obj = jws.deserialize_compact(data.strip(), key, algorithms=["EdDSA"])
        except JoseError as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        sys.stdout.buffer.write(obj.payload)
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
