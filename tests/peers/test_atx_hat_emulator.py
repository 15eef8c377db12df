"""Proves the ATX DALI HAT emulator against python-dali's own `atxled` driver.

Run: tests/.venv/bin/python -m unittest discover -s tests/peers -p 'test_atx*.py'
(or `python -m pytest tests/peers`). python-dali encodes every command itself,
so agreement here means the emulator speaks the HAT protocol and DALI the way
an independent implementation expects.

Note: the atxled driver raises TypeError when the HAT answers `X` to a query
(a string reaches the Response class), so collisions are checked on the raw
serial line instead.
"""

import logging
import os
import select
import subprocess
import sys
import time
import unittest

import serial
from dali import sequences
from dali.address import GearBroadcast, GearGroup, GearShort
from dali.command import Command
from dali.driver.atxled import SyncDaliHatDriver
from dali.gear import general as G
from dali.memory import energy, info

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "atx_hat_emulator.py")
DEADLINE = 10.0


def read_line(proc, deadline=DEADLINE):
    end = time.monotonic() + deadline
    line = b""
    while not line.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("emulator sent no line within %.0fs (got %r)" % (deadline, line))
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            b = os.read(proc.stdout.fileno(), 1)
            if not b:
                raise EOFError("emulator exited: %r" % line)
            line += b
    return line.decode().strip()


class Emulator:
    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, EMULATOR, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        ready = read_line(self.proc)
        assert ready.startswith("READY "), ready
        self.port = ready.split(" ", 1)[1]

    def control(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        reply = read_line(self.proc)
        assert reply.startswith("OK"), reply
        return reply[3:]

    def close(self):
        self.proc.kill()
        self.proc.wait(DEADLINE)
        self.proc.stdin.close()
        self.proc.stdout.close()


def run_sequence(driver, seq):
    """Drive a python-dali sequence through a sync driver (like fakes.Bus.run_sequence)."""
    response = None
    while True:
        try:
            cmd = seq.send(response)
        except StopIteration as r:
            return r.value
        response = None
        if isinstance(cmd, Command):
            response = driver.send(cmd)
        elif isinstance(cmd, sequences.sleep):
            time.sleep(cmd.delay)  # protocol timing the sequence asks for (RANDOMISE)


class AtxHatEmulatorTest(unittest.TestCase):
    def start(self, *args):
        emu = Emulator(*args)
        self.addCleanup(emu.close)
        log = logging.getLogger("atxled-test")
        log.addHandler(logging.NullHandler())
        log.propagate = False
        driver = SyncDaliHatDriver(port=emu.port, LOG=log)
        self.assertIsNotNone(driver.conn, "driver could not open %s" % emu.port)
        self.addCleanup(driver.close)
        return emu, driver

    def test_queries_levels_groups_broadcast(self):
        emu, d = self.start("--gear", "3")
        self.assertTrue(d.send(G.QueryControlGearPresent(GearShort(2))).value)
        self.assertFalse(d.send(G.QueryControlGearPresent(GearShort(3))).value)
        self.assertEqual(d.send(G.QueryActualLevel(GearShort(0))).value, 254)
        d.send(G.DAPC(GearShort(1), 229))
        self.assertEqual(d.send(G.QueryActualLevel(GearShort(1))).value, 229)
        status = d.send(G.QueryStatus(GearShort(1)))
        self.assertTrue(status.arc_power_on)
        self.assertFalse(status.lamp_failure)
        self.assertFalse(status.missing_short_address)

        d.send(G.AddToGroup(GearShort(2), 5))  # send-twice: atxled uses `t`
        self.assertEqual(d.send(G.QueryGroupsZeroToSeven(GearShort(2))).raw_value.as_integer, 1 << 5)
        d.send(G.Off(GearGroup(5)))
        self.assertEqual(d.send(G.QueryActualLevel(GearShort(2))).value, 0)
        self.assertEqual(d.send(G.QueryActualLevel(GearShort(0))).value, 254)
        d.send(G.RecallMinLevel(GearBroadcast()))
        for a in range(3):
            self.assertEqual(d.send(G.QueryActualLevel(GearShort(a))).value, 1)
        self.assertEqual(d.send(G.QueryDeviceType(GearShort(0))).raw_value.as_integer, 6)

    def test_fallback_levels_need_send_twice(self):
        emu, d = self.start("--gear", "1")
        d.send(G.DTR0(170))
        d.send(G.SetSystemFailureLevel(GearShort(0)))
        self.assertEqual(d.send(G.QuerySystemFailureLevel(GearShort(0))).value, 170)
        d.send(G.DTR0(200))
        d.send(G.SetPowerOnLevel(GearShort(0)))
        self.assertEqual(d.send(G.QueryPowerOnLevel(GearShort(0))).value, 200)
        self.assertEqual(emu.control("state 0").count('"power_on_level": 200'), 1)

        # One copy on the raw line (`h`, not `t`) must be ignored.
        d.send(G.DTR0(100))
        d.conn.write(b"h012D\n")
        self.assertEqual(d.read_line().strip(), "N")
        self.assertEqual(d.send(G.QueryPowerOnLevel(GearShort(0))).value, 200)
        # Two identical `h` copies back to back act.
        d.conn.write(b"h012D\nh012D\n")
        self.assertEqual(d.read_line().strip(), "N")
        self.assertEqual(d.read_line().strip(), "N")
        self.assertEqual(d.send(G.QueryPowerOnLevel(GearShort(0))).value, 100)

    def test_memory_banks(self):
        emu, d = self.start("--gear", "2")
        self.assertEqual(run_sequence(d, info.GTIN.read(GearShort(1))), 1234567654321)
        self.assertEqual(run_sequence(d, info.IdentificationNumber.read(GearShort(1))), 2)
        d.send(G.DAPC(GearShort(0), 229))
        power = run_sequence(d, energy.ActivePower.read(GearShort(0)))
        self.assertAlmostEqual(float(power), 50.5, places=1)
        wh = run_sequence(d, energy.ActiveEnergy.read(GearShort(0)))
        self.assertGreaterEqual(float(wh), 1001)

    def test_lamp_failure_removal_and_collision(self):
        emu, d = self.start("--gear", "2")
        emu.control("lamp_failure 1 on")
        status = d.send(G.QueryStatus(GearShort(1)))
        self.assertTrue(status.lamp_failure)
        self.assertFalse(status.arc_power_on)
        self.assertTrue(d.send(G.QueryLampFailure(GearShort(1))).value)
        emu.control("remove 1")
        self.assertFalse(d.send(G.QueryControlGearPresent(GearShort(1))).value)
        emu.control("duplicate 0")
        d.conn.write(b"h01A0\n")  # QUERY ACTUAL LEVEL A0, answered by two gear
        self.assertEqual(d.read_line().strip(), "X")
        # A yes/no query with several answers is still a (framing-error) YES on the bus.
        d.conn.write(b"h0191\n")
        self.assertEqual(d.read_line().strip(), "X")

    def test_python_dali_commissioning(self):
        # One unaddressed gear: COMPARE never collides, so atxled's X quirk stays out.
        emu, d = self.start("--gear", "2", "--unaddressed", "1")
        run_sequence(d, sequences.Commissioning())
        self.assertEqual(emu.control("shorts"), "[0, 1, 2]")
        self.assertTrue(d.send(G.QueryControlGearPresent(GearShort(2))).value)


if __name__ == "__main__":
    unittest.main()
