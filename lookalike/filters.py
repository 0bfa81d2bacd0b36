"""Filters: conditions every result of a search or a listing must meet, one definition for every
front end (CLI flags, JSON and multipart bodies, query parameters) and one SQL translation.

- ``taken_after`` / ``taken_before``: days, inclusive, compared with the photo's local date taken;
- ``camera``: text found (case-insensitively) in the camera's make or model, or both ("iphone",
  "canon eos");
- ``near``: within ``km`` of a latitude and longitude (great-circle distance);
- ``folders``: photos in any of these folders or their sub-folders;
- ``orientation``: ``landscape`` (wider than high), ``portrait`` (higher than wide) or ``square``;
- ``format``: jpeg, png, gif, bmp, webp, tiff, heic, avif or raw;
- ``people``: photos with every one of these people in them (each by id or name, as
  :mod:`lookalike.library.people` keeps them; the JSON key is ``person``, one or a list).

:meth:`Filters.from_dict` reads the JSON form (the keys above; ``folder`` may be one path or a list)
and names the first bad key or value in a :class:`BadInput`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from lookalike.errors import BadInput
from lookalike.metadata import FORMAT_NAMES

Orientation = Literal["landscape", "portrait", "square"]
ORIENTATIONS: tuple[Orientation, ...] = ("landscape", "portrait", "square")
KEYS = ("taken_after", "taken_before", "camera", "near", "folder", "orientation", "format", "person")
EARTH_KM = 6371.0088  # the mean Earth radius
MAX_FOLDERS = 100  # folders one filter names (each is an index range in its SQL)
MAX_PEOPLE = 20  # people one filter names (each is a subquery in its SQL)


@dataclass(frozen=True)
class Near:
    """Within ``km`` kilometres of (``lat``, ``lon``)."""

    lat: float
    lon: float
    km: float

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("lat", self.lat, -90, 90),
            ("lon", self.lon, -180, 180),
            ("km", self.km, 0, math.inf),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise BadInput(f"near.{name} must be a number, not {value!r}", "bad filter")
            if not low <= value <= high:
                what = f"between {low} and {high}" if high < math.inf else f"at least {low}"
                raise BadInput(f"near.{name} must be {what}, not {value}", "bad filter")

    @classmethod
    def parse(cls, text: str) -> Near:
        """``LAT,LON,KM`` as the CLI and query parameters write it."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3:
            raise BadInput(f"near must be LAT,LON,KM (three numbers), not {text!r}", "bad filter")
        try:
            lat, lon, km = (float(p) for p in parts)
        except ValueError:
            raise BadInput(f"near must be LAT,LON,KM (three numbers), not {text!r}", "bad filter") from None
        return cls(lat, lon, km)

    def box(self) -> tuple[float, float, float, float]:
        """(lat_min, lat_max, lon_min, lon_max) around the circle, for an index range scan; the
        longitudes span everything near a pole or across the antimeridian."""
        dlat = math.degrees(self.km / EARTH_KM)
        lat_min, lat_max = self.lat - dlat, self.lat + dlat
        if lat_min <= -90 or lat_max >= 90:
            return max(lat_min, -90), min(lat_max, 90), -180, 180
        dlon = math.degrees(self.km / EARTH_KM / math.cos(math.radians(max(abs(lat_min), abs(lat_max)))))
        if self.lon - dlon < -180 or self.lon + dlon > 180:
            return lat_min, lat_max, -180, 180
        return lat_min, lat_max, self.lon - dlon, self.lon + dlon


def km_between(lat1: float | None, lon1: float | None, lat2: float, lon2: float) -> float | None:
    """The great-circle distance (haversine), in km; None where a position is unknown."""
    if lat1 is None or lon1 is None:
        return None
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def parse_day(value: Any, name: str) -> date:
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a date (YYYY-MM-DD), not {value!r}", "bad filter")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise BadInput(f"{name} must be a date (YYYY-MM-DD), not {value!r}", "bad filter") from None


@dataclass(frozen=True)
class Filters:
    """Conditions every result must meet, whatever started the search (see the module)."""

    taken_after: date | None = None
    taken_before: date | None = None
    camera: str | None = None
    near: Near | None = None
    folders: tuple[str, ...] = ()
    orientation: Orientation | None = None
    format: str | None = None
    people: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # taken_after later than taken_before is no error: an empty range, which keeps nothing.
        if self.camera is not None and not self.camera.strip():
            raise BadInput("camera must name a make or model, not be empty", "bad filter")
        if self.orientation is not None and self.orientation not in ORIENTATIONS:
            raise BadInput(
                f"orientation must be one of {', '.join(ORIENTATIONS)}, not {self.orientation!r}", "bad filter"
            )
        if self.format is not None and self.format not in FORMAT_NAMES:
            raise BadInput(f"format must be one of {', '.join(FORMAT_NAMES)}, not {self.format!r}", "bad filter")
        if len(self.folders) > MAX_FOLDERS:
            raise BadInput(f"folder: at most {MAX_FOLDERS} folders, not {len(self.folders)}", "bad filter")
        folders = tuple(_folder(f) for f in self.folders)
        object.__setattr__(self, "folders", folders)
        if len(self.people) > MAX_PEOPLE:
            raise BadInput(f"person: at most {MAX_PEOPLE} people, not {len(self.people)}", "bad filter")
        people = tuple(dict.fromkeys(_person(p) for p in self.people))
        object.__setattr__(self, "people", people)

    @property
    def active(self) -> bool:
        return any(
            (
                self.taken_after,
                self.taken_before,
                self.camera,
                self.near,
                self.folders,
                self.orientation,
                self.format,
                self.people,
            )
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Filters:
        """The JSON form (and query parameters): unknown keys and bad values are named."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise BadInput(f"filters must be an object with keys {', '.join(KEYS)}", "bad filter")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise BadInput(f"unknown filter {unknown[0]!r}: filters are {', '.join(KEYS)}", "bad filter")
        near = data.get("near")
        if isinstance(near, str):
            near = Near.parse(near)
        elif isinstance(near, dict):
            extra = sorted(set(near) - {"lat", "lon", "km"})
            missing = sorted({"lat", "lon", "km"} - set(near))
            if extra or missing:
                raise BadInput(
                    "near must be {lat, lon, km}" + f" ({'unknown ' + extra[0] if extra else 'missing ' + missing[0]})",
                    "bad filter",
                )
            near = Near(near["lat"], near["lon"], near["km"])
        elif near is not None:
            raise BadInput(f"near must be {{lat, lon, km}} or 'LAT,LON,KM', not {near!r}", "bad filter")
        folder = data.get("folder")
        folders = (folder,) if isinstance(folder, str) else tuple(folder or ())
        if not all(isinstance(f, str) for f in folders):
            raise BadInput("folder must be a path or a list of paths", "bad filter")
        person: Any = data.get("person")
        people = [person] if isinstance(person, (str, int)) else person if isinstance(person, list) else []
        if (
            person is not None
            and not isinstance(person, (str, int, list))
            or not all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in people)
        ):
            raise BadInput("person must be a person's id or name, or a list of them", "bad filter")
        for name in ("camera", "orientation", "format"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise BadInput(f"{name} must be text, not {data[name]!r}", "bad filter")
        return cls(
            taken_after=parse_day(data["taken_after"], "taken_after") if data.get("taken_after") is not None else None,
            taken_before=parse_day(data["taken_before"], "taken_before")
            if data.get("taken_before") is not None
            else None,
            camera=data.get("camera"),
            near=near,
            folders=folders,
            orientation=data.get("orientation"),
            format=data.get("format"),
            people=tuple(str(p) for p in people),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with only the conditions set (what flows carry to the shards)."""
        out: dict[str, Any] = {}
        if self.taken_after:
            out["taken_after"] = self.taken_after.isoformat()
        if self.taken_before:
            out["taken_before"] = self.taken_before.isoformat()
        if self.camera is not None:
            out["camera"] = self.camera
        if self.near is not None:
            out["near"] = {"lat": self.near.lat, "lon": self.near.lon, "km": self.near.km}
        if self.folders:
            out["folder"] = list(self.folders)
        if self.orientation is not None:
            out["orientation"] = self.orientation
        if self.format is not None:
            out["format"] = self.format
        if self.people:
            out["person"] = list(self.people)
        return out

    def sql(self) -> tuple[str, list[Any]]:
        """A condition on the ``docs`` table (named ``d``) and its parameters: "1" for no filter."""
        where: list[str] = []
        args: list[Any] = []
        if self.taken_after:
            where.append("d.taken_at >= ?")
            args.append(self.taken_after.isoformat())
        if self.taken_before and self.taken_before < date.max:  # (date.max: every day there is)
            where.append("d.taken_at < ?")
            args.append((self.taken_before + timedelta(days=1)).isoformat())
        if self.camera is not None:
            where.append("d.camera_id IN (SELECT id FROM cameras WHERE lower(make || ' ' || model) LIKE ? ESCAPE '!')")
            text = " ".join(self.camera.lower().split())
            args.append("%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
        if self.near is not None:
            lat_min, lat_max, lon_min, lon_max = self.near.box()
            where.append("d.lat BETWEEN ? AND ? AND d.lon BETWEEN ? AND ? AND lookalike_km(d.lat, d.lon, ?, ?) <= ?")
            args += [lat_min, lat_max, lon_min, lon_max, self.near.lat, self.near.lon, self.near.km]
        if self.folders:
            parts = []
            for folder in self.folders:
                raw = os.fsencode(folder).rstrip(b"/")  # the root "/" is b"": every folder below it
                parts.append("(d.folder = ? OR (d.folder >= ? AND d.folder < ?))")
                args += [raw, raw + b"/", raw + b"0"]  # "0" follows "/": every path below the folder
            where.append("(" + " OR ".join(parts) + ")")
        if self.orientation is not None:
            where.append(
                {"landscape": "d.width > d.height", "portrait": "d.height > d.width", "square": "d.width = d.height"}[
                    self.orientation
                ]
            )
        if self.format is not None:
            where.append("d.format = ?")
            args.append(self.format)
        for person in self.people:  # by id (a merged one's: whom it went to) or by name
            where.append(
                "d.id IN (SELECT c.doc_id FROM face_people f JOIN chunks c ON c.id = f.chunk_id WHERE f.person_id = "
                "(SELECT id FROM people WHERE merged_into IS NULL AND (CAST(id AS TEXT) = ? OR name = ? "
                "COLLATE NOCASE) ORDER BY CAST(id AS TEXT) = ? DESC LIMIT 1))"
            )
            args += [person, person, person]
        return (" AND ".join(where) or "1"), args


def _person(person: str) -> str:
    text = " ".join(str(person).split())
    if not text:
        raise BadInput("person must be a person's id or name, not empty", "bad filter")
    return text


def _folder(path: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise BadInput(f"folder must be a path, not {path!r}", "bad filter")
    return os.path.abspath(os.path.expanduser(path)).rstrip(os.sep) or os.sep
