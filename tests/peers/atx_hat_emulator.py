#!/usr/bin/env python3
"""Emulated ATX LED AL-DALI-HAT with python-dali fake control gear behind it.

The HAT line protocol (as python-dali's ``dali.driver.atxled`` speaks it, 19200 8N1):
requests ``hXXXX`` (16-bit frame), ``tXXXX`` (16-bit send-twice: the HAT puts
the frame on the bus twice), ``lXXXXXX`` (24-bit), ``jXX`` (8-bit), one per
line; replies ``JXX`` (backward frame), ``N`` (no backward frame), ``X``
(framing error: several gear answered). A ``t`` request gets two reply lines.

The gear are ``dali.tests.fakes.Gear`` (python-dali 0.16) extended with what
the fakes lack: QUERY STATUS, lamp/gear failure, POWER ON / SYSTEM FAILURE
LEVEL, fade time/rate, RANDOMISE only while initialising, D4i banks 202
(energy grows with the level) and 205 (operating time). Frames are decoded by
python-dali's own ``Command.from_frame``, so an encoding bug in a client shows
up as wrong behaviour. Send-twice is enforced: a configuration command acts
only when the identical frame arrives twice in a row within 100 ms (``t``, or
two identical ``h`` requests).

Start: ``atx_hat_emulator.py --gear 4 --unaddressed 3`` creates a pty and
prints ``READY /dev/pts/N`` on stdout (or ``--port PATH`` serves an existing
tty, e.g. one end of ``socat -d -d pty,raw,echo=0 pty,raw,echo=0``).

Control channel: one command per stdin line, each answered by one stdout line
(``OK ...`` or ``ERR ...``); stdin EOF ends the emulator.
  lamp_failure A on|off     gear_failure A on|off
  remove A | restore A      gear A disconnected / reconnected
  bus_power off|on          cut / restore the DALI bus power: every gear stops answering and
                            goes to its SYSTEM FAILURE LEVEL (IEC 62386-102), where it stays
                            when the power returns until it is told a level
  duplicate A               add a second gear on short address A (collisions)
  state A                   OK {json of the gear on A}
  shorts                    OK [short addresses of all gear, null = none]
  frames                    OK <number of forward frames received so far>
"""

import argparse
import json
import os
import select
import sys
import time
import tty

from dali import command, frame
from dali.gear import general as G
from dali.memory import diagnostics, energy
from dali.tests import fakes

SEND_TWICE_WINDOW = 0.1


class Bank202(fakes.FakeMemoryBank):
    bank = energy.BANK_202


class Bank205(fakes.FakeMemoryBank):
    bank = diagnostics.BANK_205


def arc_to_percent(level):
    if level == 0 or level == 255:
        return 0.0
    return 10 ** ((level - 1) / (253 / 3) - 1)


class HatGear(fakes.Gear):
    """python-dali fake gear plus status, failures, fallback levels and D4i banks."""

    def __init__(self, shortaddr, serial, rated_w=100.0):
        super().__init__(
            shortaddr=shortaddr,
            devicetypes=[6],
            memory_banks=(fakes.FakeBank0, fakes.FakeBank1, Bank202, Bank205),
        )
        self.serial = serial
        bank0 = self.memory_banks[0]
        for i, b in enumerate(serial.to_bytes(8, "big")):
            bank0.contents[0x0B + i] = b
        self.level = 254
        self.rated_w = rated_w
        self.energy_wh = 1000.0 + serial
        self.operating_s = 3600 * 1000
        self.last_accrual = time.monotonic()
        self.lamp_failure = False
        self.gear_failure = False
        self.connected = True
        self.power_on_level = 254
        self.system_failure_level = 254
        self.fade_time = 0
        self.fade_rate = 7
        self.power_cycle_seen = True

    def power_w(self):
        if self.lamp_failure or self.level == 0:
            return 0.5
        return self.rated_w * arc_to_percent(self.level) / 100

    def accrue(self):
        now = time.monotonic()
        dt = now - self.last_accrual
        self.last_accrual = now
        self.energy_wh += self.power_w() * dt / 3600
        self.operating_s += dt

    def refresh_banks(self):
        b202 = self.memory_banks[202].contents
        b202[0x04] = 0x00  # energy in Wh (10^0)
        for i, b in enumerate(int(self.energy_wh).to_bytes(6, "big")):
            b202[0x05 + i] = b
        b202[0x0B] = 0xFF  # power in 0.1 W (10^-1)
        for i, b in enumerate(round(self.power_w() * 10).to_bytes(4, "big")):
            b202[0x0C + i] = b
        b205 = self.memory_banks[205].contents
        for i, b in enumerate(int(self.operating_s).to_bytes(4, "big")):
            b205[0x04 + i] = b
        b205[0x0F] = 1 if self.gear_failure else 0
        b205[0x1B] = 60 + 35  # 35 °C

    def status(self):
        bits = [
            self.gear_failure,
            self.lamp_failure,
            self.level > 0 and not self.lamp_failure,
            False,  # limit error
            False,  # fade running: fades are instant
            False,  # reset state
            self.shortaddr is None,
            self.power_cycle_seen,
        ]
        return sum(1 << i for i, on in enumerate(bits) if on)

    def send(self, cmd):
        if not self.connected:
            return None
        self.accrue()
        if not self.valid_address(cmd):
            return super().send(cmd)
        yes = 0xFF
        if isinstance(cmd, G.QueryStatus):
            return self.status()
        if isinstance(cmd, G.QueryLampFailure):
            return yes if self.lamp_failure else None
        if isinstance(cmd, G.QueryLampPowerOn):
            return yes if self.level > 0 and not self.lamp_failure else None
        if isinstance(cmd, G.QueryControlGearFailure):
            return yes if self.gear_failure else None
        if isinstance(cmd, G.QueryPowerFailure):
            return yes if self.power_cycle_seen else None
        if isinstance(cmd, G.QueryActualLevel) and self.lamp_failure:
            return 255
        if isinstance(cmd, G.QueryPowerOnLevel):
            return self.power_on_level
        if isinstance(cmd, G.QuerySystemFailureLevel):
            return self.system_failure_level
        if isinstance(cmd, G.QueryFadeTimeFadeRate):
            return (self.fade_time << 4) | self.fade_rate
        if isinstance(cmd, G.SetPowerOnLevel):
            self.power_on_level = self.dtr0
            return None
        if isinstance(cmd, G.SetSystemFailureLevel):
            self.system_failure_level = self.dtr0
            return None
        if isinstance(cmd, G.SetFadeTime):
            self.fade_time = min(self.dtr0, 15)
            return None
        if isinstance(cmd, G.SetFadeRate):
            self.fade_rate = min(max(self.dtr0, 1), 15)
            return None
        if isinstance(cmd, G.Randomise) and not self.initialising:
            return None  # IEC 62386-102: ignored outside initialisation
        if isinstance(cmd, (G.DAPC, G.Off, G.RecallMaxLevel, G.RecallMinLevel, G.GoToScene)):
            self.power_cycle_seen = False
        if isinstance(cmd, G.ReadMemoryLocation) and self.dtr1 in (202, 205):
            self.refresh_banks()
        return super().send(cmd)

    def state(self):
        return {
            "short": self.shortaddr,
            "serial": self.serial,
            "level": self.level,
            "groups": sorted(self.groups),
            "power_on_level": self.power_on_level,
            "system_failure_level": self.system_failure_level,
            "fade_time": self.fade_time,
            "min_level": self.level_min,
            "max_level": self.level_max,
            "lamp_failure": self.lamp_failure,
            "gear_failure": self.gear_failure,
            "connected": self.connected,
            "random": self.randomaddr.as_integer,
        }


class Hat:
    """The HAT: turns request lines into bus frames and bus outcomes into reply lines."""

    def __init__(self, gear):
        self.gear = gear
        self.armed = None  # (frame value, time) of a first send-twice copy
        self.devicetype = 0
        self.frames = 0

    def bus(self, cmd):
        answers = [r for r in (g.send(cmd) for g in self.gear) if r is not None]
        if not answers:
            return "N"
        if len(answers) > 1:
            return "X"
        return "J%02X" % answers[0]

    def frame16(self, value, twice):
        self.frames += 2 if twice else 1
        cmd = command.Command.from_frame(frame.ForwardFrame(16, value), devicetype=self.devicetype)
        self.devicetype = cmd.param if isinstance(cmd, G.EnableDeviceType) else 0
        if not getattr(cmd, "sendtwice", False):
            self.armed = None
            replies = [self.bus(cmd)]
            if twice:
                replies.append(self.bus(cmd))
            return replies
        if twice:
            self.armed = None
            self.bus(cmd)
            return ["N", "N"]
        now = time.monotonic()
        if self.armed and self.armed[0] == value and now - self.armed[1] <= SEND_TWICE_WINDOW:
            self.armed = None
            return [self.bus(cmd)]
        # First copy: remembered, not executed.
        self.armed = (value, now)
        return ["N"]

    def request(self, line):
        line = line.strip()
        if not line:
            return []
        prefix, data = line[0], line[1:]
        try:
            value = int(data, 16)
        except ValueError:
            return []
        if prefix == "h" and len(data) == 4:
            return self.frame16(value, twice=False)
        if prefix == "t" and len(data) == 4:
            return self.frame16(value, twice=True)
        if prefix in ("l", "j", "m"):
            # No control devices and no 8-bit listeners on this line.
            self.armed = None
            self.frames += 1
            return ["N"]
        return []


def find(gear, short):
    for g in gear:
        if g.shortaddr == short:
            return g
    return None


def control(hat, line):
    parts = line.split()
    if not parts:
        return "ERR empty"
    cmd, args = parts[0], parts[1:]
    try:
        if cmd == "shorts":
            return "OK " + json.dumps([g.shortaddr for g in hat.gear])
        if cmd == "frames":
            return "OK %d" % hat.frames
        if cmd == "bus_power":
            on = args[0] == "on"
            for g in hat.gear:
                g.accrue()
                g.connected = on
                if not on and g.system_failure_level != 255:
                    g.level = g.system_failure_level
            return "OK bus_power %s" % args[0]
        short = int(args[0])
        if cmd == "duplicate":
            original = find(hat.gear, short)
            serial = 1000 + len(hat.gear)
            ghost = HatGear(short, serial)
            if original is not None:
                ghost.level = original.level
            hat.gear.append(ghost)
            return "OK duplicate %d" % short
        g = find(hat.gear, short)
        if g is None:
            return "ERR no gear on %d" % short
        if cmd == "state":
            return "OK " + json.dumps(g.state())
        if cmd in ("lamp_failure", "gear_failure"):
            setattr(g, cmd, args[1] == "on")
            return "OK %s %d %s" % (cmd, short, args[1])
        if cmd == "remove":
            g.connected = False
            return "OK remove %d" % short
        if cmd == "restore":
            g.connected = True
            return "OK restore %d" % short
    except (IndexError, ValueError) as e:
        return "ERR %s" % e
    return "ERR unknown command %r" % cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gear", type=int, default=4, help="gear with short addresses 0..N-1")
    ap.add_argument("--unaddressed", type=int, default=0, help="extra gear without short address")
    ap.add_argument("--lamp-failure", type=int, action="append", default=[], metavar="A")
    ap.add_argument("--missing", type=int, action="append", default=[], metavar="A",
                    help="gear A starts disconnected")
    ap.add_argument("--duplicate", type=int, action="append", default=[], metavar="A",
                    help="a second gear answers on short address A")
    ap.add_argument("--seed", type=int, default=1, help="seed of the gear random addresses")
    ap.add_argument("--port", help="serve this existing tty instead of creating a pty")
    args = ap.parse_args()

    import random

    random.seed(args.seed)  # fakes.Gear draws random addresses from `random`
    gear = [HatGear(i, i + 1) for i in range(args.gear)]
    gear += [HatGear(None, args.gear + j + 1) for j in range(args.unaddressed)]
    hat = Hat(gear)
    for a in args.lamp_failure:
        control(hat, "lamp_failure %d on" % a)
    for a in args.missing:
        control(hat, "remove %d" % a)
    for a in args.duplicate:
        control(hat, "duplicate %d" % a)

    if args.port:
        fd = os.open(args.port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        name, keep = args.port, None
    else:
        fd, keep = os.openpty()
        # Raw slave: no echo, no line discipline between client and HAT.
        tty.setraw(keep)
        name = os.ttyname(keep)
    print("READY %s" % name, flush=True)

    inbuf = b""
    stdin = sys.stdin.fileno()
    ctlbuf = b""
    while True:
        ready, _, _ = select.select([fd, stdin], [], [])
        if stdin in ready:
            chunk = os.read(stdin, 4096)
            if not chunk:
                break
            ctlbuf += chunk
            while b"\n" in ctlbuf:
                line, ctlbuf = ctlbuf.split(b"\n", 1)
                print(control(hat, line.decode("ascii", "replace")), flush=True)
        if fd in ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                # pty slave closed by the client and not held: keep serving.
                chunk = b""
            if not chunk:
                if keep is None:
                    break
                continue
            inbuf += chunk
            while b"\n" in inbuf:
                line, inbuf = inbuf.split(b"\n", 1)
                replies = hat.request(line.decode("ascii", "replace"))
                if replies:
                    os.write(fd, ("".join(r + "\n" for r in replies)).encode("ascii"))
    os.close(fd)
    if keep is not None:
        os.close(keep)


if __name__ == "__main__":
    main()
