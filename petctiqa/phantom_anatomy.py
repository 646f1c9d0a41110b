"""Analytic thorax anatomy for the synthetic PET/CT phantom.

Shapes live in DICOM patient coordinates (LPS, millimetres) of a supine, head-first patient:
x increases towards the patient's left, y increases posteriorly (towards the couch) and z
increases superiorly. Every shape carries a :class:`Tissue` (CT number in HU and FDG uptake as
body-weight SUV). :func:`paint` samples a list of shapes onto any voxel grid, later shapes
overwriting earlier ones, with partial-volume edges (a linear ramp one voxel wide), so the same
anatomy can be drawn on the 512x512 CT grid and on the coarse PET grid.

:func:`build_thorax` draws one patient's anatomy (shoulders to upper abdomen) from a seeded
generator: body outline with subcutaneous fat, chest-wall muscle, lungs, mediastinum (heart,
aorta, vena cava, pulmonary trunk, trachea, oesophagus), spine, ribs, sternum, scapulae,
clavicles, liver, spleen, stomach, kidneys, a carbon-fibre couch and 1-3 FDG-avid lesions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tissue:
    """A material: CT number (HU) and FDG uptake (body-weight SUV, g/ml)."""

    name: str
    hu: float
    suv: float


AIR = Tissue("air", -1000.0, 0.0)


@dataclass(frozen=True)
class Tube:
    """Super-elliptic cross-sections interpolated linearly between z key levels.

    ``z`` is increasing; the shape exists for ``z[0] <= z <= z[-1]``. ``cx, cy`` are the centre
    and ``ax, ay`` the semi-axes (mm) at each key level; ``angle_deg`` rotates the section in the
    x-y plane; ``power`` 2 is an ellipse, larger values give a rounded rectangle.
    """

    name: str
    tissue: Tissue
    z: tuple[float, ...]
    cx: tuple[float, ...]
    cy: tuple[float, ...]
    ax: tuple[float, ...]
    ay: tuple[float, ...]
    angle_deg: float = 0.0
    power: float = 2.0
    in_pet: bool = True

    def sections(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """(present, cx, cy, ax, ay) at each of the z levels (arrays shaped like ``z``)."""
        zk = np.asarray(self.z, dtype=np.float64)
        present = (z >= zk[0]) & (z <= zk[-1])
        values = [np.interp(z, zk, np.asarray(v, dtype=np.float64)) for v in self._keys()]
        cx, cy, ax, ay = values
        present &= (ax > 0) & (ay > 0)
        return present, cx, cy, ax, ay

    def _keys(self) -> tuple[tuple[float, ...], ...]:
        return self.cx, self.cy, self.ax, self.ay

    @property
    def z_range(self) -> tuple[float, float]:
        return self.z[0], self.z[-1]


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid with axis-aligned z extent, optionally rotated in the x-y plane."""

    name: str
    tissue: Tissue
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle_deg: float = 0.0
    power: float = 2.0
    in_pet: bool = True

    def sections(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        cx, cy, cz = self.center
        rx, ry, rz = self.radii
        s2 = 1.0 - ((z - cz) / rz) ** 2
        present = s2 > 0
        scale = np.sqrt(np.clip(s2, 0.0, None))
        return present, np.full_like(z, cx), np.full_like(z, cy), rx * scale, ry * scale

    @property
    def z_range(self) -> tuple[float, float]:
        return self.center[2] - self.radii[2], self.center[2] + self.radii[2]


@dataclass(frozen=True)
class Slab:
    """An axis-aligned box ``x0..x1, y0..y1`` extending over all z (the couch)."""

    name: str
    tissue: Tissue
    x: tuple[float, float]
    y: tuple[float, float]
    in_pet: bool = True

    @property
    def z_range(self) -> tuple[float, float]:
        return -math.inf, math.inf


@dataclass(frozen=True)
class RibCage:
    """Rib cross-sections on an elliptic ring (the ``ring`` tube's outline).

    ``count`` ribs are spaced evenly in elliptic angle; their pattern turns by one rib spacing per
    ``pitch_mm`` of z (ribs slope downwards anteriorly). Ribs are omitted within ``gap_front`` /
    ``gap_back`` radians of the anterior / posterior midline (sternum, spine). Each rib section is
    an ellipse with ``radial_mm`` / ``tangential_mm`` semi-axes.
    """

    name: str
    tissue: Tissue
    ring: Tube
    count: int
    pitch_mm: float
    phase: float
    radial_mm: float
    tangential_mm: float
    gap_front: float
    gap_back: float
    in_pet: bool = True

    @property
    def z_range(self) -> tuple[float, float]:
        return self.ring.z_range


Shape = Tube | Ellipsoid | Slab | RibCage


@dataclass(frozen=True)
class Lesion:
    """A spherical FDG-avid lesion (ground truth)."""

    name: str
    center_mm: tuple[float, float, float]
    diameter_mm: float
    suv: float
    hu: float


@dataclass(frozen=True)
class Anatomy:
    """One patient's shapes (painted in order) and the ground truth a test can check."""

    shapes: tuple[Shape, ...]
    lesions: tuple[Lesion, ...]
    landmarks: tuple[tuple[str, tuple[float, float, float]], ...]
    """Named points well inside one structure: (name, (x, y, z) mm)."""
    body_back_y: float
    """Posterior skin line (mm), where the patient rests on the couch."""


# ----------------------------------------------------------------------------- painting


def _index_range(coords: np.ndarray, low: float, high: float) -> tuple[int, int]:
    """Index range [i0, i1) of the sorted 1-D coordinates inside [low, high]."""
    return int(np.searchsorted(coords, low, "left")), int(np.searchsorted(coords, high, "right"))


def _section_mask(
    shape: Tube | Ellipsoid,
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    edge_mm: float,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    present, cx, cy, ax, ay = shape.sections(zs)
    if not present.any():
        return None
    ks = np.nonzero(present)[0]
    k0, k1 = int(ks[0]), int(ks[-1]) + 1
    cx, cy, ax, ay = cx[k0:k1], cy[k0:k1], ax[k0:k1], ay[k0:k1]
    reach = np.maximum(ax, ay) if shape.angle_deg else ax
    reach_y = np.maximum(ax, ay) if shape.angle_deg else ay
    margin = edge_mm
    i0, i1 = _index_range(
        xs, float(np.min(cx - reach)) - margin, float(np.max(cx + reach)) + margin
    )
    j0, j1 = _index_range(
        ys, float(np.min(cy - reach_y)) - margin, float(np.max(cy + reach_y)) + margin
    )
    if i1 <= i0 or j1 <= j0:
        return None
    f32 = np.float32
    dx = xs[i0:i1].astype(f32)[None, None, :] - cx.astype(f32)[:, None, None]
    dy = ys[j0:j1].astype(f32)[None, :, None] - cy.astype(f32)[:, None, None]
    ax3 = np.maximum(ax, 1e-3).astype(f32)[:, None, None]
    ay3 = np.maximum(ay, 1e-3).astype(f32)[:, None, None]
    if shape.angle_deg:
        c, s = (
            f32(math.cos(math.radians(shape.angle_deg))),
            f32(math.sin(math.radians(shape.angle_deg))),
        )
        u = (dx * c + dy * s) / ax3
        v = (dy * c - dx * s) / ay3
    else:
        u = dx / ax3
        v = dy / ay3
    if shape.power == 2.0:
        r = np.sqrt(u * u + v * v)
    else:
        p = f32(shape.power)
        r = (np.abs(u) ** p + np.abs(v) ** p) ** (1 / p)
    dist = np.sqrt(dx * dx + dy * dy)
    # distance to the outline along the ray from the centre: (1 - r) * (radius along the ray)
    ray_radius = np.divide(dist, r, out=np.minimum(ax3, ay3) * np.ones_like(r), where=r > 1e-6)
    mask = np.clip(f32(0.5) + (1 - r) * ray_radius / f32(edge_mm), 0, 1)
    mask *= present[k0:k1, None, None]
    return (slice(k0, k1), slice(j0, j1), slice(i0, i1)), mask


def _slab_mask(
    shape: Slab, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, edge_mm: float
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    (x0, x1), (y0, y1) = shape.x, shape.y
    i0, i1 = _index_range(xs, x0 - edge_mm, x1 + edge_mm)
    j0, j1 = _index_range(ys, y0 - edge_mm, y1 + edge_mm)
    if i1 <= i0 or j1 <= j0:
        return None
    f32 = np.float32
    mx = np.clip(0.5 + np.minimum(xs[i0:i1] - x0, x1 - xs[i0:i1]) / edge_mm, 0, 1).astype(f32)
    my = np.clip(0.5 + np.minimum(ys[j0:j1] - y0, y1 - ys[j0:j1]) / edge_mm, 0, 1).astype(f32)
    mask = np.broadcast_to((my[:, None] * mx[None, :])[None], (len(zs), j1 - j0, i1 - i0))
    return (slice(0, len(zs)), slice(j0, j1), slice(i0, i1)), mask


def _rib_mask(
    shape: RibCage, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, edge_mm: float
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    present, cx, cy, ax, ay = shape.ring.sections(zs)
    if not present.any():
        return None
    ks = np.nonzero(present)[0]
    k0, k1 = int(ks[0]), int(ks[-1]) + 1
    cx, cy, ax, ay, z = cx[k0:k1], cy[k0:k1], ax[k0:k1], ay[k0:k1], zs[k0:k1]
    reach = shape.radial_mm + shape.tangential_mm + edge_mm
    i0, i1 = _index_range(xs, float(np.min(cx - ax)) - reach, float(np.max(cx + ax)) + reach)
    j0, j1 = _index_range(ys, float(np.min(cy - ay)) - reach, float(np.max(cy + ay)) + reach)
    if i1 <= i0 or j1 <= j0:
        return None
    f32 = np.float32
    dx = xs[i0:i1].astype(f32)[None, None, :] - cx.astype(f32)[:, None, None]
    dy = ys[j0:j1].astype(f32)[None, :, None] - cy.astype(f32)[:, None, None]
    ax3 = np.maximum(ax, 1e-3).astype(f32)[:, None, None]
    ay3 = np.maximum(ay, 1e-3).astype(f32)[:, None, None]
    u, v = dx / ax3, dy / ay3
    rho = np.sqrt(u * u + v * v)
    mean_radius = ((ax3 + ay3) / 2).astype(f32)
    # only the band around the ring can hold ribs: evaluate angles there alone
    band = np.abs(rho - 1) * mean_radius < f32(shape.radial_mm + edge_mm)
    kk, jj, ii = np.nonzero(band)
    u_b, v_b, rho_b = u[kk, 0, ii], v[kk, jj, 0], rho[kk, jj, ii]
    radius_b = mean_radius[kk, 0, 0]
    phi = np.arctan2(v_b, u_b)  # -pi/2 anterior (y < 0), +pi/2 posterior
    spacing = f32(2 * math.pi / shape.count)
    turn = (shape.phase + 2 * math.pi / shape.count * (z / shape.pitch_mm)).astype(f32)
    dphi = np.mod(phi - turn[kk] + spacing / 2, spacing) - spacing / 2
    radial = (rho_b - 1) * radius_b / f32(shape.radial_mm)
    tangential = dphi * radius_b / f32(shape.tangential_mm)
    r = np.sqrt(radial * radial + tangential * tangential)
    rib_radius = f32(min(shape.radial_mm, shape.tangential_mm))
    values = np.clip(f32(0.5) + (1 - r) * rib_radius / f32(edge_mm), 0, 1)
    front = np.abs(phi + f32(math.pi / 2)) < shape.gap_front
    back = np.abs(phi - f32(math.pi / 2)) < shape.gap_back
    values[front | back] = 0
    mask = np.zeros(rho.shape, dtype=f32)
    mask[kk, jj, ii] = values
    mask *= present[k0:k1, None, None]
    return (slice(k0, k1), slice(j0, j1), slice(i0, i1)), mask


def shape_mask(
    shape: Shape, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, edge_mm: float
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Partial-volume occupancy (0..1, float32) of ``shape`` on the grid, cropped to its box.

    ``xs`` (columns) and ``ys`` (rows) must be increasing; ``zs`` is the z of each slice in
    volume order. Returns ``(index slices into the volume, mask)`` or None when the shape misses
    the grid.
    """
    if isinstance(shape, Slab):
        return _slab_mask(shape, xs, ys, zs, edge_mm)
    if isinstance(shape, RibCage):
        return _rib_mask(shape, xs, ys, zs, edge_mm)
    return _section_mask(shape, xs, ys, zs, edge_mm)


def paint(
    shapes: tuple[Shape, ...] | list[Shape],
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    quantity: str,
    edge_mm: float,
    background: float = 0.0,
) -> np.ndarray:
    """Paint ``shapes`` in order onto a (len(zs), len(ys), len(xs)) float32 volume.

    ``quantity`` is "hu" (CT numbers) or "suv" (FDG uptake; shapes with ``in_pet=False``, such as
    sub-voxel lung vessels, are skipped). Each shape blends over what is below it by its
    partial-volume occupancy.
    """
    if quantity not in ("hu", "suv"):
        raise ValueError(f"quantity must be 'hu' or 'suv', not {quantity!r}")
    volume = np.full((len(zs), len(ys), len(xs)), background, dtype=np.float32)
    for shape in shapes:
        if quantity == "suv" and not shape.in_pet:
            continue
        found = shape_mask(shape, xs, ys, zs, edge_mm)
        if found is None:
            continue
        index, mask = found
        value = np.float32(getattr(shape.tissue, quantity))
        region = volume[index]
        region += mask * (value - region)
    return volume


def point_truth(
    shapes: tuple[Shape, ...], point: tuple[float, float, float]
) -> tuple[str, float, float]:
    """(tissue name, HU, SUV) of the anatomy at one point, with sharp edges and no noise.

    Outside every shape this is ("air", -1000, 0). Shapes with ``in_pet=False`` are invisible to
    the SUV, as in :func:`paint`.
    """
    grid = [np.array([v], dtype=np.float64) for v in point]
    name, hu, suv = AIR.name, AIR.hu, AIR.suv
    for shape in shapes:
        z_low, z_high = shape.z_range
        if not z_low <= point[2] <= z_high:
            continue
        found = shape_mask(shape, grid[0], grid[1], grid[2], edge_mm=1e-3)
        if found is None or found[1].size == 0 or found[1].ravel()[0] < 0.5:
            continue
        name, hu = shape.tissue.name, shape.tissue.hu
        if shape.in_pet:
            suv = shape.tissue.suv
    return name, float(hu), float(suv)


# ----------------------------------------------------------------------------- the thorax


@dataclass(frozen=True)
class BodyHabitus:
    """Patient size: drives the body outline and fat thickness."""

    sex: str
    """"M" or "F"."""
    weight_kg: float
    half_width_mm: float
    """Body semi-axis left-right at mid chest."""
    half_depth_mm: float
    """Body semi-axis anterior-posterior at mid chest."""
    fat_mm: float
    """Subcutaneous fat thickness."""


def draw_habitus(rng: np.random.Generator, sex: str, weight_kg: float) -> BodyHabitus:
    """Body size from sex and weight, with seeded individual variation."""
    extra = weight_kg - 50.0
    half_width = 138.0 + 0.9 * extra + (10.0 if sex == "M" else 0.0) + rng.normal(0, 6)
    half_depth = 92.0 + 0.55 * extra + rng.normal(0, 5)
    fat = 6.0 + 0.32 * extra + (5.0 if sex == "F" else 0.0) + rng.normal(0, 2)
    return BodyHabitus(sex, weight_kg, half_width, half_depth, float(np.clip(fat, 4, 30)))


def _tube(name: str, tissue: Tissue, rows: list[tuple[float, ...]], **kw) -> Tube:
    """A tube from rows (z, cx, cy, ax, ay), sorted by z."""
    rows = sorted(rows)
    z, cx, cy, ax, ay = (tuple(float(r[i]) for r in rows) for i in range(5))
    return Tube(name, tissue, z, cx, cy, ax, ay, **kw)


def build_thorax(
    rng: np.random.Generator,
    habitus: BodyHabitus,
    z_top: float,
    length_mm: float,
    n_lesions: int,
) -> Anatomy:
    """One patient's thorax (+ upper abdomen) from ``z_top`` down to ``z_top - length_mm``.

    Anatomical levels are placed at fractions ``t`` of the covered length (0 = base of the neck /
    shoulders, about 0.07 = lung apex, 0.25 aortic arch, 0.33 carina, 0.4-0.76 heart, 0.68 right
    diaphragm dome, 1 = upper abdomen with liver, spleen, stomach and the upper kidney poles).
    """
    # Long on purpose: the anatomy table, one structure per statement, top to bottom.

    def z_at(t: float) -> float:
        return z_top - t * length_mm

    def jitter(scale: float) -> float:
        return float(rng.normal(0.0, scale))

    h = habitus
    W, D, fat = h.half_width_mm, h.half_depth_mm, h.fat_mm

    # --- tissues (per-patient uptake and density variation)
    liver_suv = float(np.clip(rng.normal(2.5, 0.2), 2.0, 3.0))
    blood_suv = float(np.clip(rng.normal(1.8, 0.12), 1.5, 2.1))
    lung_suv = float(np.clip(rng.normal(0.5, 0.05), 0.35, 0.65))
    myocardium_suv = float(rng.uniform(3.0, 9.0))
    t_fat = Tissue("fat", -100.0 + jitter(6), 0.3)
    t_muscle = Tissue("muscle", 45.0 + jitter(4), 0.8)
    t_breast = Tissue("breast", -60.0 + jitter(10), 0.5)
    t_med_fat = Tissue("mediastinal fat", -90.0 + jitter(6), 0.35)
    t_abdomen = Tissue("abdominal fat and bowel", -50.0 + jitter(8), 0.7)
    t_lung = Tissue("lung", -850.0 + jitter(20), lung_suv)
    t_blood = Tissue("blood", 40.0 + jitter(3), blood_suv)
    t_myocardium = Tissue("myocardium", 42.0 + jitter(3), myocardium_suv)
    t_air = Tissue("air", -1000.0, 0.0)
    t_soft = Tissue("soft tissue", 35.0, 1.2)
    t_cortical = Tissue("cortical bone", float(rng.uniform(650, 900)), 0.4)
    t_marrow = Tissue("vertebral marrow", float(rng.uniform(180, 260)), 1.4)
    t_disc = Tissue("intervertebral disc", 90.0, 0.7)
    t_rib = Tissue("rib", float(rng.uniform(450, 650)), 0.6)
    t_csf = Tissue("spinal canal", 20.0, 1.0)
    t_liver = Tissue("liver", 58.0 + jitter(4), liver_suv)
    t_spleen = Tissue("spleen", 48.0 + jitter(3), float(np.clip(rng.normal(2.1, 0.15), 1.7, 2.5)))
    t_stomach = Tissue("stomach wall", 40.0, 1.8)
    t_fluid = Tissue("gastric fluid", 12.0, 0.4)
    t_kidney = Tissue("kidney", 32.0, 3.5)
    t_carbon = Tissue("couch shell", 600.0, 0.0)
    t_foam = Tissue("couch foam", -920.0, 0.0)

    shapes: list[Shape] = []
    landmarks: list[tuple[str, tuple[float, float, float]]] = []

    # --- body outline: wide at the shoulders, back flat on the couch (constant posterior line)
    x0 = jitter(4)
    body_back = float(rng.uniform(95, 125)) + D - 100.0
    body_rows = []
    for t, wf, df in ((-0.08, 1.13, 0.84), (0.0, 1.12, 0.85), (0.12, 1.05, 0.92), (0.4, 1.0, 1.0),
                      (0.7, 0.98, 1.0), (1.1, 0.96, 1.03)):  # fmt: skip
        ax, ay = W * wf, D * df
        body_rows.append((z_at(t), x0, body_back - ay, ax, ay))
    body = _tube("body", t_fat, body_rows)
    shapes.append(body)
    if h.sex == "F":
        size = float(rng.uniform(0.8, 1.3))
        for side in (-1, 1):
            shapes.append(
                Ellipsoid(
                    "breast",
                    t_breast,
                    (x0 + side * 0.45 * W, body_back - 2 * D + 12 * size, z_at(0.47)),
                    (50 * size, 32 * size, 55 * size),
                )
            )

    def shrink(rows: list[tuple[float, ...]], by: float) -> list[tuple[float, ...]]:
        return [(z, cx, cy, max(ax - by, 1.0), max(ay - by, 1.0)) for z, cx, cy, ax, ay in rows]

    muscle_rows = shrink(body_rows, fat)
    shapes.append(_tube("chest wall muscle", t_muscle, muscle_rows))
    wall = 14.0 + jitter(1.5)  # chest wall: muscle + ribs
    cavity_rows = [r for r in shrink(body_rows, fat + wall) if r[0] <= z_at(0.02)]
    cavity_rows.insert(0, (z_at(-0.02),) + cavity_rows[0][1:3] + (30.0, 20.0))
    # thoracic cavity (mediastinal fat between organs) above the diaphragm, abdomen below
    thorax_rows = [r for r in cavity_rows if r[0] >= z_at(0.72)]
    abdomen_rows = [r for r in cavity_rows if r[0] <= z_at(0.7)]
    shapes.append(_tube("thoracic cavity", t_med_fat, thorax_rows))
    shapes.append(_tube("abdominal cavity", t_abdomen, abdomen_rows))

    def cavity_at(t: float) -> tuple[float, float, float, float]:
        _, cx, cy, ax, ay = _tube("c", t_fat, cavity_rows).sections(np.array([z_at(t)]))
        return float(cx[0]), float(cy[0]), float(ax[0]), float(ay[0])

    cav_cx, cav_cy, cav_ax, cav_ay = cavity_at(0.5)
    cav_front = cav_cy - cav_ay
    y_spine = body_back - fat - 62.0 + jitter(3)  # vertebral body centre

    # --- lungs: apex ~t 0.06, widest mid thorax, bases recessed posteriorly down to ~t 0.9
    lungs: list[Tube] = []
    apex = 0.05 + float(rng.uniform(0, 0.03))
    for side, name in ((-1, "right lung"), (1, "left lung")):
        rows = []
        for t, sx, sy, post in ((apex, 0.05, 0.05, 0.2), (apex + 0.05, 0.45, 0.45, 0.15),
                                (0.2, 0.8, 0.8, 0.08), (0.45, 1.0, 1.0, 0.04), (0.68, 1.0, 1.0, 0.05),
                                (0.8, 0.75, 0.6, 0.35), (0.9, 0.45, 0.2, 0.7)):  # fmt: skip
            cx_, cy_, ax_, ay_ = cavity_at(t)
            lax, lay = 0.47 * ax_ * sx, 0.86 * ay_ * sy
            lx = cx_ + side * (0.5 * ax_ + 3.0)
            ly = cy_ + post * ay_ + 0.05 * ay_
            rows.append((z_at(t), lx, ly, lax, lay))
        rows.append((z_at(0.9) - 1.0, rows[-1][1], rows[-1][2], 0.0, 0.0))
        lung = _tube(name, t_lung, rows)
        lungs.append(lung)
        shapes.append(lung)

    # --- mediastinum
    heart_r = (float(rng.uniform(52, 62)), float(rng.uniform(42, 50)), 0.19 * length_mm)
    heart_c = (cav_cx + 0.22 * cav_ax + jitter(4), cav_front + heart_r[1] + 6.0, z_at(0.58))
    shapes.append(Ellipsoid("epicardial fat", t_med_fat, heart_c,
                            (heart_r[0] + 4, heart_r[1] + 4, heart_r[2] + 4), angle_deg=-25))  # fmt: skip
    heart = Ellipsoid("heart", t_myocardium, heart_c, heart_r, angle_deg=-25)
    shapes.append(heart)
    hx, hy, hz = heart_c
    wall_mm = float(rng.uniform(9, 13))
    lv_c = (hx + 12.0, hy + 6.0, hz - 5.0)
    shapes.append(Ellipsoid("left ventricle", t_blood, lv_c,
                            (0.55 * heart_r[0], 0.5 * heart_r[1], 0.6 * heart_r[2]), angle_deg=-25))  # fmt: skip
    shapes.append(Ellipsoid("right ventricle", t_blood, (hx - 24.0, hy - 10.0, hz - 8.0),
                            (0.4 * heart_r[0], 0.35 * heart_r[1], 0.55 * heart_r[2]), angle_deg=-25))  # fmt: skip
    shapes.append(Ellipsoid("left atrium", t_blood, (hx - 5.0, hy + 0.55 * heart_r[1], hz + 0.55 * heart_r[2]),
                            (28.0, 18.0, 22.0)))  # fmt: skip
    del wall_mm

    y_trachea = y_spine - 48.0
    trachea_rows = [
        (z_at(-0.05), x0, y_trachea, 11.0, 10.0),
        (z_at(0.33), x0, y_trachea + 5, 12.0, 10.0),
    ]
    carina = z_at(0.33)
    shapes.append(_tube("oesophagus", t_soft, [(z_at(-0.05), x0 + 4, y_spine - 26, 8, 6),
                                                (z_at(0.8), x0 + 15, y_spine - 30, 9, 7)]))  # fmt: skip
    r_aorta = float(rng.uniform(11, 14))
    y_arch = y_spine - 55.0
    asc_x, asc_y = x0 - 12.0, y_arch - 28.0
    desc_x, desc_y = x0 + 24.0, y_spine - 10.0
    arch_t = 0.22 + float(rng.uniform(0, 0.04))
    shapes.append(_tube("descending aorta", t_blood, [(z_at(arch_t), desc_x, desc_y - 8, r_aorta, r_aorta),
                                                      (z_at(0.75), desc_x - 6, desc_y - 4, r_aorta, r_aorta),
                                                      (z_at(1.1), x0 + 8, y_spine - 30, r_aorta - 1, r_aorta - 1)]))  # fmt: skip
    shapes.append(_tube("aortic arch", t_blood, [(z_at(arch_t + 0.03), (asc_x + desc_x) / 2, y_arch - 6, 38, r_aorta),
                                                 (z_at(arch_t - 0.02), (asc_x + desc_x) / 2, y_arch - 6, 34, r_aorta)]))  # fmt: skip
    shapes.append(_tube("ascending aorta", t_blood, [(z_at(arch_t + 0.02), asc_x, asc_y, r_aorta + 2, r_aorta + 2),
                                                     (z_at(0.5), asc_x + 6, asc_y + 4, r_aorta + 3, r_aorta + 3)]))  # fmt: skip
    shapes.append(_tube("superior vena cava", t_blood, [(z_at(0.05), x0 - 32, y_arch - 20, 9, 9),
                                                        (z_at(0.48), x0 - 35, y_arch - 10, 11, 11)]))  # fmt: skip
    shapes.append(_tube("pulmonary trunk", t_blood, [(z_at(0.34), x0 + 15, asc_y + 2, 14, 14),
                                                     (z_at(0.45), x0 + 15, asc_y - 2, 14, 14)]))  # fmt: skip
    shapes.append(_tube("pulmonary arteries", t_blood, [(z_at(0.34), x0, y_arch + 8, 48, 10),
                                                        (z_at(0.38), x0, y_arch + 8, 50, 10)]))  # fmt: skip
    shapes.append(_tube("trachea wall", t_soft, trachea_rows))
    shapes.append(_tube("trachea", t_air, [(z, cx, cy, ax - 2.5, ay - 2.5) for z, cx, cy, ax, ay in trachea_rows]))  # fmt: skip
    for side in (-1, 1):
        shapes.append(_tube("main bronchus", t_air, [(carina, x0 + side * 6, y_trachea + 5, 7, 7),
                                                     (carina - 0.08 * length_mm, x0 + side * 40, y_trachea + 12, 5, 5)]))  # fmt: skip

    # lung vessels: sub-voxel for PET, skipped there
    for lung in lungs:
        n_vessels = 60
        ts = rng.uniform(0.12, 0.8, n_vessels)
        ang = rng.uniform(0, 2 * math.pi, n_vessels)
        rad = np.sqrt(rng.uniform(0.0, 0.8, n_vessels))
        size = rng.uniform(1.5, 3.5, n_vessels)
        for t, a, r, s in zip(ts, ang, rad, size, strict=True):
            present, lx, ly, lax, lay = lung.sections(np.array([z_at(float(t))]))
            if not present[0]:
                continue
            c = (
                float(lx[0] + r * lax[0] * math.cos(a)),
                float(ly[0] + r * lay[0] * math.sin(a)),
                z_at(float(t)),
            )
            shapes.append(Ellipsoid("lung vessel", t_blood, c, (s, s, 3 * s), in_pet=False))

    # --- upper abdomen
    liver_r = (0.62 * cav_ax, 0.8 * cav_ay, 0.42 * length_mm)
    dome = 0.66 + float(rng.uniform(0, 0.04))
    liver_c = (cav_cx - 0.42 * cav_ax, cav_cy - 0.05 * cav_ay, z_at(dome) - liver_r[2])
    liver = Ellipsoid("liver", t_liver, liver_c, liver_r)
    shapes.append(liver)
    shapes.append(Ellipsoid("liver left lobe", t_liver,
                            (cav_cx + 0.1 * cav_ax, cav_cy - 0.45 * cav_ay, z_at(dome + 0.08) - 0.25 * length_mm),
                            (0.45 * cav_ax, 0.35 * cav_ay, 0.25 * length_mm)))  # fmt: skip
    shapes.append(_tube("inferior vena cava", t_blood, [(z_at(0.68), x0 - 22, y_spine - 22, 12, 11),
                                                        (z_at(1.1), x0 - 24, y_spine - 20, 12, 11)]))  # fmt: skip
    stomach_top = z_at(dome + 0.07)
    st_c = (cav_cx + 0.38 * cav_ax, cav_cy - 0.25 * cav_ay, stomach_top - 55.0)
    shapes.append(Ellipsoid("stomach", t_stomach, st_c, (48.0, 40.0, 55.0)))
    shapes.append(Ellipsoid("stomach lumen", t_fluid, st_c, (42.0, 34.0, 49.0)))
    shapes.append(
        Ellipsoid(
            "gastric air", t_air, (st_c[0], st_c[1] - 14.0, st_c[2] + 12.0), (30.0, 18.0, 30.0)
        )
    )
    shapes.append(Ellipsoid("spleen", t_spleen, (cav_cx + 0.62 * cav_ax, y_spine - 5.0, z_at(dome + 0.1) - 50.0),
                            (32.0, 48.0, 52.0), angle_deg=35))  # fmt: skip
    for side, top in ((-1, 0.94), (1, 0.91)):
        shapes.append(Ellipsoid("kidney", t_kidney, (x0 + side * 62.0, y_spine + 8.0, z_at(top) - 55.0),
                                (28.0, 24.0, 55.0), angle_deg=side * 30))  # fmt: skip

    # --- skeleton
    rib_ring = _tube("rib ring", t_rib, shrink(body_rows, fat + 0.45 * wall))
    ribs_z = (z_at(1.02), z_at(0.03))
    rib_ring = Tube("rib ring", t_rib, *(tuple(v) for v in _clip_rows(rib_ring, *ribs_z)))
    shapes.append(RibCage("ribs", t_rib, rib_ring, count=16, pitch_mm=float(rng.uniform(26, 34)),
                          phase=float(rng.uniform(0, 2 * math.pi)), radial_mm=5.0, tangential_mm=9.0,
                          gap_front=0.4, gap_back=0.3))  # fmt: skip
    shapes.append(_tube("sternum", t_cortical, [(z_at(0.08), x0, cav_front - 7, 24, 8),
                                                 (z_at(0.2), x0, cav_front - 7, 16, 7),
                                                 (z_at(0.66), x0, cav_front - 6, 13, 6)]))  # fmt: skip
    shapes.append(_tube("sternal marrow", t_marrow, [(z_at(0.09), x0, cav_front - 7, 20, 5),
                                                      (z_at(0.2), x0, cav_front - 7, 12, 4),
                                                      (z_at(0.65), x0, cav_front - 6, 9, 3)]))  # fmt: skip
    back = body_back - fat
    for side in (-1, 1):
        shapes.append(_tube("scapula", t_cortical, [(z_at(-0.05), x0 + side * 0.62 * W, back - 22, 42, 6),
                                                     (z_at(0.3), x0 + side * 0.55 * W, back - 16, 30, 5)],
                            angle_deg=side * 22))  # fmt: skip
        shapes.append(_tube("clavicle", t_cortical, [(z_at(-0.08), x0 + side * 70, body_back - 2 * D * 0.85 + fat + 22, 48, 8),
                                                      (z_at(0.04), x0 + side * 62, body_back - 2 * D * 0.88 + fat + 24, 40, 7)],
                            angle_deg=-side * 12))  # fmt: skip
    top, bottom = z_at(-0.1), z_at(1.1)
    vb_rows = [(top, x0, y_spine, 15, 13), (bottom, x0, y_spine, 22, 17)]
    shapes.append(_tube("vertebral arch", t_cortical, [(top, x0, y_spine + 30, 36, 7), (bottom, x0, y_spine + 34, 40, 8)]))  # fmt: skip
    shapes.append(_tube("spinous process", t_cortical, [(top, x0, y_spine + 42, 5, 14), (bottom, x0, y_spine + 48, 6, 15)]))  # fmt: skip
    shapes.append(_tube("vertebral cortex", t_cortical, vb_rows))
    shapes.append(_tube("vertebral body", t_marrow, shrink(vb_rows, 2.5)))
    level_mm = float(rng.uniform(22, 27))
    z_disc = top - float(rng.uniform(0, level_mm))
    disc_levels: list[float] = []
    while z_disc > bottom:
        disc_levels.append(z_disc)
        t = (z_top - z_disc) / length_mm
        w = 15 + 7 * (t + 0.1) / 1.2
        shapes.append(_tube("intervertebral disc", t_disc, [(z_disc - 2.5, x0, y_spine, w, w * 0.78),
                                                             (z_disc + 2.5, x0, y_spine, w, w * 0.78)]))  # fmt: skip
        z_disc -= level_mm
    shapes.append(_tube("spinal canal", t_csf, [(top, x0, y_spine + 24, 8, 8), (bottom, x0, y_spine + 27, 9, 8)]))  # fmt: skip

    # --- couch (carbon-fibre shells around a foam core); not in the PET field of activity
    couch_top = body_back + 0.5
    shapes.append(
        Slab("couch", t_carbon, (-225.0, 225.0), (couch_top, couch_top + 48.0), in_pet=False)
    )
    shapes.append(
        Slab(
            "couch core", t_foam, (-220.0, 220.0), (couch_top + 5.0, couch_top + 43.0), in_pet=False
        )
    )

    # --- lesions: lung nodules (and sometimes a hilar / mediastinal node)
    avoid = [s for s in shapes if s.name in ("heart", "epicardial fat", "liver", "liver left lobe",
                                              "descending aorta", "ascending aorta", "aortic arch",
                                              "pulmonary arteries", "main bronchus", "stomach", "spleen")]  # fmt: skip
    lesions: list[Lesion] = []
    for index in range(n_lesions):
        diameter = float(rng.uniform(16, 30))
        suv = float(rng.uniform(5, 15))
        hu = float(rng.uniform(20, 45))
        if index > 0 and rng.random() < 0.3:
            center = (x0 - 25.0 + jitter(2), y_trachea - 4 + jitter(3), z_at(0.24) + jitter(5))
            diameter = float(rng.uniform(16, 22))
            lesions.append(Lesion("mediastinal node", center, diameter, suv, hu))
            continue
        for _attempt in range(200):
            lung = lungs[int(rng.integers(0, 2))]
            z = z_at(float(rng.uniform(0.15, 0.72)))
            _, lx, ly, lax, lay = lung.sections(np.array([z]))
            r_l = diameter / 2 + 4.0
            if lax[0] <= r_l + 5 or lay[0] <= r_l + 5:
                continue
            a = rng.uniform(0, 2 * math.pi)
            rho = math.sqrt(rng.uniform(0, 1))
            center = (float(lx[0] + rho * (lax[0] - r_l) * math.cos(a)),
                      float(ly[0] + rho * (lay[0] - r_l) * math.sin(a)), z)  # fmt: skip
            cx_, cy_, cz_ = center
            probes = [(cx_, cy_, cz_ + dz) for dz in (-diameter / 2, 0.0, diameter / 2)]
            if any(_inside(s, p, diameter / 2 + 6.0) for s in avoid for p in probes):
                continue
            if not all(_inside(lung, p, -4.0) for p in probes):
                continue
            if any(
                math.dist(center, other.center_mm) < (diameter + other.diameter_mm) / 2 + 10
                for other in lesions
            ):
                continue
            lesions.append(Lesion("lung nodule", center, diameter, suv, hu))
            break
    for lesion in lesions:
        r = lesion.diameter_mm / 2
        shapes.append(
            Ellipsoid(
                lesion.name, Tissue(lesion.name, lesion.hu, lesion.suv), lesion.center_mm, (r, r, r)
            )
        )

    # --- landmarks (points well inside one structure; the tests read CT/PET there)
    liver_pt = (liver_c[0] - 0.15 * liver_r[0], liver_c[1] - 0.25 * liver_r[1], z_at(0.86))
    landmarks.append(("liver", liver_pt))
    for lung in lungs:
        _, lx, ly, lax, lay = lung.sections(np.array([z_at(0.3)]))
        landmarks.append((lung.name, (float(lx[0]), float(ly[0] - 0.3 * lay[0]), z_at(0.3))))
    landmarks.append(("descending aorta", (desc_x - 1.0, desc_y - 6.0, z_at(0.5))))
    z_mid = z_at(0.5)
    z_vertebra = min((z_mid + d for d in np.arange(-12.0, 12.5, 0.5)),
                     key=lambda z: (-min(abs(z - zd) for zd in disc_levels), abs(z - z_mid)))  # fmt: skip
    landmarks.append(("vertebral body", (x0, y_spine, float(z_vertebra))))
    z_wall = z_at(0.55)
    _, bx, by, bax, bay = body.sections(np.array([z_wall]))
    landmarks.append(("subcutaneous fat", (float(bx[0] + bax[0] - fat / 2), float(by[0]), z_wall)))
    landmarks.append(
        ("chest wall muscle", (float(bx[0]), float(by[0] - bay[0] + fat + 0.35 * wall), z_at(0.72)))
    )
    landmarks.append(("couch shell", (0.0, couch_top + 2.5, z_at(0.5))))
    landmarks.append(("outside air", (x0, body_back - 2 * D - 40.0, z_at(0.5))))
    return Anatomy(tuple(shapes), tuple(lesions), tuple(landmarks), body_back)


def _clip_rows(tube: Tube, z_low: float, z_high: float) -> tuple[tuple[float, ...], ...]:
    """Key rows of ``tube`` restricted to ``z_low..z_high`` (interpolated at the ends)."""
    zs = sorted({z_low, z_high, *[z for z in tube.z if z_low < z < z_high]})
    present, cx, cy, ax, ay = tube.sections(np.array(zs))
    return tuple(zs), tuple(cx), tuple(cy), tuple(ax), tuple(ay)


def _inside(shape: Shape, point: tuple[float, float, float], margin_mm: float) -> bool:
    """Whether ``point`` lies inside ``shape`` grown by ``margin_mm`` (negative: shrunk)."""
    if isinstance(shape, Slab | RibCage):
        raise TypeError("_inside supports tubes and ellipsoids")
    x, y, z = point
    present, cx, cy, ax, ay = shape.sections(np.array([z]))
    if not present[0]:
        return False
    a, b = ax[0] + margin_mm, ay[0] + margin_mm
    if a <= 0 or b <= 0:
        return False
    dx, dy = x - cx[0], y - cy[0]
    if shape.angle_deg:
        c, s = math.cos(math.radians(shape.angle_deg)), math.sin(math.radians(shape.angle_deg))
        dx, dy = dx * c + dy * s, dy * c - dx * s
    return (dx / a) ** 2 + (dy / b) ** 2 <= 1.0
