"""A WS-Discovery responder for `cabinetd onvif discover` tests: joins 239.255.255.250 on
loopback (run it inside a private network namespace), answers each Probe with one
ProbeMatch (RelatesTo = the Probe's MessageID), prints READY, exits after --probes probes."""
import argparse
import re
import socket
import struct

ap = argparse.ArgumentParser()
ap.add_argument("--probes", type=int, default=2)
args = ap.parse_args()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 3702))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton("127.0.0.1")))
print("READY", flush=True)
for _ in range(args.probes):
    data, peer = s.recvfrom(65536)
    m = re.search(rb"MessageID>([^<]+)<", data)
    if not m or b"Probe" not in data:
        continue
    reply = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"'
        ' xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
        ' xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery">'
        '<s:Header><a:RelatesTo>%s</a:RelatesTo></s:Header><s:Body><d:ProbeMatches><d:ProbeMatch>'
        '<a:EndpointReference><a:Address>urn:uuid:peer-cam-1</a:Address></a:EndpointReference>'
        '<d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>'
        '<d:Scopes>onvif://www.onvif.org/name/peer onvif://www.onvif.org/location/cabinet</d:Scopes>'
        '<d:XAddrs>http://127.0.0.1:8080/onvif/device_service</d:XAddrs>'
        '<d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>'
    ) % m.group(1).decode()
    s.sendto(reply.encode(), peer)
