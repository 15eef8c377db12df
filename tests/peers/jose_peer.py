"""An independent JOSE implementation (joserfc) for the signed-command interop tests.

    jose_peer.py sign KEY.pem KID      JSON payload on stdin -> compact JWS (EdDSA) on stdout
    jose_peer.py verify PUBLIC_X       compact JWS on stdin -> payload on stdout; exit 1 if refused

KEY.pem is a PKCS#8 Ed25519 private key (as `cabinetd key generate` writes); PUBLIC_X is the
base64url public key of the config's [[security.trusted_key]] (a JWK's "x").
"""

import sys
import warnings

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

# joserfc marks "EdDSA" deprecated by RFC 9864 ("Ed25519"); SPEC v1.1 fixes "EdDSA".
warnings.simplefilter("ignore")


def main() -> int:
    mode = sys.argv[1]
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
