#!/usr/bin/env python3
"""Modbus peer for cabinetd's tests: a real pymodbus (3.16) server, TCP or RTU.

Usage:
  modbus_server.py --tcp 127.0.0.1:0 [--unit 1] [--json FILE] [--exception-at ADDR] [--silent]
  modbus_server.py --rtu /dev/pts/N --baud 19200 --parity E [--unit 1] [--json FILE] ...

``--unit`` may be repeated (or given as ``1,2``): one server serves several units with the same
contents, as an RS-485 line with several devices, or a Modbus TCP→RTU gateway in front of one.
A request for another unit is answered, over TCP, with exception 0x0B "gateway target device
failed to respond" (what a gateway says when the unit behind it is silent) unless
``--ignore-missing``; over RTU it is never answered (a missing unit on a line is silent).
With several units, ``REQ``/``WRITE`` lines end with `` unit=<id>``.

Prints exactly one line ``READY <port-or-path>`` on stdout once it serves, then one line per
read that reached the datastore: ``REQ fc=<function code> addr=<address> count=<n>`` (for bit
tables pymodbus counts 16-bit blocks, not bits), and per write
``WRITE fc=<fc> addr=<address> values=<comma separated>``. These lines let a test
count how many requests a poll needed and see that a write reached the device.
Exits on SIGTERM/SIGINT.

``--json FILE`` describes the initial contents, per table (``coils``, ``discrete``, ``input``,
``holding``), as a list of entries:
  {"address": 0, "raw": 17}                      one raw 16-bit register (or bit: true/false)
  {"address": 0, "raw": [1, 2, 3]}               consecutive raw registers/bits
  {"address": 4, "type": "f32", "value": 1.5, "word_order": "little"}
Types: u16 i16 u32 i32 u64 i64 f32 f64 (encoded here with Python's struct, independently of
the Rust decoder under test). Every address between the lowest and the highest defined one of a
table exists (zero-filled), so reads spanning small gaps succeed.

Over TCP, every connection opened or closed prints ``CONNECT`` / ``DISCONNECT``.

``--exception-at ADDR`` answers "illegal data address" (exception code 2) to any register read
or write (input or holding) whose range covers ADDR.
``--silent`` accepts connections (TCP) or opens the line (RTU) but never answers: a dead device.

``--control`` reads commands on stdin, one per line, each answered by one stdout line starting
``OK`` (or ``ERR``): ``set TABLE ADDR VALUE[,VALUE…]`` changes the datastore as the device
itself would (TABLE: coils, discrete, input, holding; bits as 0/1), ``get TABLE ADDR`` prints
``OK <raw value>``. The tests drive sensors this way (a temperature crossing a threshold).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

STRUCT = {
    "u16": "H",
    "i16": "h",
    "u32": "I",
    "i32": "i",
    "u64": "Q",
    "i64": "q",
    "f32": "f",
    "f64": "d",
}
READ_FCS = {1, 2, 3, 4}
# Function codes of the datastore access per table (reads; sets use the same mapping).
TABLE_FC = {"coils": 1, "discrete": 2, "holding": 3, "input": 4}


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def encode_entry(entry: dict, bits: bool) -> list:
    if "raw" in entry:
        raw = entry["raw"]
        vals = raw if isinstance(raw, list) else [raw]
        return [bool(v) for v in vals] if bits else [int(v) & 0xFFFF for v in vals]
    if bits:
        return [bool(entry["value"])]
    fmt = STRUCT[entry["type"]]
    value = entry["value"]
    if fmt not in ("f", "d"):
        value = int(value)
    data = struct.pack(">" + fmt, value)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if entry.get("word_order", "big") == "little":
        words.reverse()
    return words


def build_table(entries: list, bits: bool) -> list[SimData]:
    cells: dict[int, object] = {}
    for entry in entries:
        for i, v in enumerate(encode_entry(entry, bits)):
            cells[int(entry["address"]) + i] = v
    if not cells:
        # pymodbus needs at least one block per table; keep it far away from test addresses.
        cells = {60000: False if bits else 0}
    lo, hi = min(cells), max(cells)
    fill = False if bits else 0
    values = [cells.get(a, fill) for a in range(lo, hi + 1)]
    if bits:
        return [SimData(lo, values=values, datatype=DataType.BITS)]
    return [SimData(lo, values=values, datatype=DataType.REGISTERS)]


def make_action(exception_at: int | None, suffix: str = ""):
    async def action(fc, _start, address, count, _registers, set_values):
        if fc in READ_FCS:
            out(f"REQ fc={fc} addr={address} count={count}{suffix}")
        elif set_values is not None:
            vals = ",".join(str(int(v)) for v in set_values)
            out(f"WRITE fc={fc} addr={address} values={vals}{suffix}")
        if (
            exception_at is not None
            and fc in (3, 4, 6, 16)
            and address <= exception_at < address + count
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        return None

    return action


async def silent_tcp(host: str, port: int, stop: asyncio.Event) -> None:
    conns = []

    async def swallow(reader, writer):
        conns.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, host, port)
    out(f"READY {server.sockets[0].getsockname()[1]}")
    await stop.wait()
    server.close()


async def silent_rtu(path: str, stop: asyncio.Event) -> None:
    import serial  # pyserial, only needed for this mode

    port = serial.Serial(path, timeout=0)
    out(f"READY {path}")
    while not stop.is_set():
        port.read(4096)
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except asyncio.TimeoutError:
            pass
    port.close()


async def control(server, units: list[int]) -> None:
    """Serves ``--control`` commands from stdin until EOF: ``set`` changes every unit (they
    share their contents), ``get`` reads the first."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        parts = line.decode("ascii", "replace").split()
        try:
            cmd, table, addr = parts[0], parts[1], int(parts[2])
            fc = TABLE_FC[table]
            if cmd == "set":
                values = [int(v) for v in parts[3].split(",")]
                if fc in (1, 2):
                    values = [bool(v) for v in values]
                errs = [await server.context.async_setValues(u, fc, addr, values) for u in units]
                err = next((e for e in errs if e), None)
                out("ERR %s" % err if err else "OK set")
            elif cmd == "get":
                got = await server.context.async_getValues(units[0], fc, addr, 1)
                out("OK %d" % int(got[0]) if isinstance(got, list) else "ERR %s" % got)
            else:
                out("ERR unknown command %r" % cmd)
        except (IndexError, KeyError, ValueError) as e:
            out("ERR %s" % e)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tcp", help="HOST:PORT (port 0: any free port)")
    ap.add_argument("--rtu", help="serial device path")
    ap.add_argument("--baud", type=int, default=19200)
    ap.add_argument("--parity", default="E", choices=["N", "E", "O"])
    ap.add_argument("--unit", action="append", default=[])
    ap.add_argument("--ignore-missing", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--exception-at", type=int)
    ap.add_argument("--silent", action="store_true")
    ap.add_argument("--control", action="store_true")
    args = ap.parse_args()
    if bool(args.tcp) == bool(args.rtu):
        ap.error("exactly one of --tcp / --rtu")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    host, port = None, None
    if args.tcp:
        host, _, port_s = args.tcp.rpartition(":")
        port = int(port_s)

    if args.silent:
        if args.tcp:
            await silent_tcp(host, port, stop)
        else:
            await silent_rtu(args.rtu, stop)
        return

    spec = {}
    if args.json:
        with open(args.json, encoding="utf-8") as f:
            spec = json.load(f)
    units = [int(u) for arg in (args.unit or ["1"]) for u in arg.split(",")]
    devices = [
        SimDevice(
            id=unit,
            simdata=(
                build_table(spec.get("coils", []), True),
                build_table(spec.get("discrete", []), True),
                build_table(spec.get("holding", []), False),
                build_table(spec.get("input", []), False),
            ),
            action=make_action(args.exception_at, f" unit={unit}" if len(units) > 1 else ""),
        )
        for unit in units
    ]
    silent_missing = bool(args.rtu) or args.ignore_missing
    if 0 not in units:
        # pymodbus' simulator serves unknown ids from device 0: a catch-all whose every answer
        # is a gateway's "target device failed to respond" (suppressed below when silent).
        async def gateway_no_response(*_args):
            return ExcCodes.GATEWAY_NO_RESPONSE

        devices.append(
            SimDevice(
                id=0,
                simdata=(
                    build_table(spec.get("coils", []), True),
                    build_table(spec.get("discrete", []), True),
                    build_table(spec.get("holding", []), False),
                    build_table(spec.get("input", []), False),
                ),
                action=gateway_no_response,
            )
        )

    def trace_packet(sending: bool, data: bytes) -> bytes:
        if sending and silent_missing and data:
            unit = data[0] if args.rtu else data[6]
            if unit not in units:
                return b""
        return data

    def trace_connect(connected: bool) -> None:
        out("CONNECT" if connected else "DISCONNECT")

    if args.tcp:
        server = ModbusTcpServer(
            devices,
            framer=FramerType.SOCKET,
            address=(host, port),
            trace_packet=trace_packet,
            trace_connect=trace_connect,
        )
        await server.serve_forever(background=True)
        ready = server.transport.sockets[0].getsockname()[1]
    else:
        server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=args.rtu,
            baudrate=args.baud,
            parity=args.parity,
            bytesize=8,
            stopbits=1,
            trace_packet=trace_packet,
        )
        await server.serve_forever(background=True)
        ready = args.rtu
    out(f"READY {ready}")
    if args.control:
        ctl = asyncio.ensure_future(control(server, units))
    await stop.wait()
    if args.control:
        ctl.cancel()
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
