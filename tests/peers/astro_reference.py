#!/usr/bin/env python3
"""Independent reference for cabinetd's astronomical clock, computed with Python `astral`.

    tests/.venv/bin/python tests/peers/astro_reference.py YEAR NAME:LAT:LON [NAME:LAT:LON ...]

For every day of YEAR, every place and both zeniths cabinetd uses (90.833° official sunrise and
sunset, 96° civil twilight) prints one JSON line:

    {"place": NAME, "zenith": Z, "date": "YYYY-MM-DD",
     "rise": "…Z" | null, "set": "…Z" | null,
     "rises": bool, "sets": bool,
     "rise_crossing": "…Z" | null, "set_crossing": "…Z" | null}

- `rise`/`set` come from `astral.sun.time_of_transit` for that date at exactly that zenith
  (`with_refraction=False`: 90.833° already includes refraction), null where astral finds no
  transit. They are counted from the date's UTC midnight, like cabinetd's solar days.
- `rises`/`sets` say whether the sun crosses the zenith that day, judged from astral's own solar
  position (`astral.sun.zenith`) at the day's extremes: it rises when it is below the altitude at
  the solar midnight before the date's solar noon and above it at noon; it sets when it is above
  at noon and below at the following solar midnight. This is the truth for polar transitions,
  where astral's two-pass `time_of_transit` (position taken at 0h UTC first) may disagree by a
  day.
- `rise_crossing`/`set_crossing`: where the sun rises/sets, the second at which astral's
  `zenith` crosses the altitude, by bisection between noon and the solar midnight (astral's
  position has whole-second resolution). Where the sun grazes the altitude (near polar
  transitions) the event time is very sensitive to the declination and `time_of_transit`'s two
  passes are off by a minute or more; this is the reference there.
"""

import datetime
import json
import sys

from astral import Observer
from astral.sun import SunDirection, noon, time_of_transit, zenith

ZENITHS = (90.833, 96.0)


def transit(obs, day, z, direction):
    try:
        t = time_of_transit(obs, day, z, direction, with_refraction=False)
    except ValueError:
        return None
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def crossing(obs, a, b, z):
    """The last whole second in [a, b] on a's side of zenith z (a and b on either side)."""
    above_a = zenith(obs, a, with_refraction=False) > z
    lo, hi = 0, int((b - a).total_seconds())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = a + datetime.timedelta(seconds=mid)
        if (zenith(obs, t, with_refraction=False) > z) == above_a:
            lo = mid
        else:
            hi = mid
    t = a + datetime.timedelta(seconds=lo)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main():
    year = int(sys.argv[1])
    places = []
    for arg in sys.argv[2:]:
        name, lat, lon = arg.split(":")
        places.append((name, Observer(latitude=float(lat), longitude=float(lon))))
    day = datetime.date(year, 1, 1)
    half_day = datetime.timedelta(hours=12)
    out = []
    while day.year == year:
        for name, obs in places:
            high = noon(obs, day)
            z_noon = zenith(obs, high, with_refraction=False)
            z_before = zenith(obs, high - half_day, with_refraction=False)
            z_after = zenith(obs, high + half_day, with_refraction=False)
            for z in ZENITHS:
                rises = z_before > z > z_noon
                sets = z_noon < z < z_after
                out.append(
                    json.dumps(
                        {
                            "place": name,
                            "zenith": z,
                            "date": day.isoformat(),
                            "rise": transit(obs, day, z, SunDirection.RISING),
                            "set": transit(obs, day, z, SunDirection.SETTING),
                            "rises": rises,
                            "sets": sets,
                            "rise_crossing": crossing(obs, high - half_day, high, z)
                            if rises
                            else None,
                            "set_crossing": crossing(obs, high, high + half_day, z)
                            if sets
                            else None,
                        }
                    )
                )
        day += datetime.timedelta(days=1)
    print("\n".join(out))


if __name__ == "__main__":
    main()
