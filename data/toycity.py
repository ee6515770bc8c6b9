"""Toy city: a deterministic synthetic street-scene dataset in the Cityscapes layout.

Scene model
-----------
A pinhole camera (focal length f px, horizon row y_h, height h_c m above a flat ground, principal
column x_v) looks down a straight street running along the depth axis Z. Each pixel's ray is
intersected analytically (vectorised over the whole image) with
  * the ground plane: road |X| < R (lane markings, crossings), sidewalks (tiles, curb), then
    terrain or more sidewalk up to the facades; an optional cross street at some depth;
  * two vertical planes per side (X = +-L near, X = +-(L + d) far) made of segments along Z:
    building (windows, bricks, panels), wall, fence, vegetation (wavy top) or gap;
  * a frontal plane closing the street at Z = Z_front; the nearest hit wins, else sky
    (gradient + clouds).
Objects stand on the ground at (X, Z), are scaled by f / Z and painted far-to-near with a
per-object depth buffer: cars (rear or front view), persons (walking legs), poles (optionally
carrying a traffic sign or traffic light) and sidewalk trees; each casts a ground shadow and has
its own fixed noise pattern. Facades on
the sun side are darker and shade a strip of the street. A global brightness / contrast / colour
cast, Gaussian noise and (sometimes) an ego-vehicle hood labelled 255 complete the picture.
Labels are Cityscapes trainIds (CLASS_NAMES[i] is trainId i; 255 = ignore).

Videos: the static world is rendered once as a panorama wider than the frame, and the camera
window pans across it by an integer number of pixels per frame, so static content satisfies
exactly  frame[t+1][y, x] == frame[t][y, x + camera_dx[t+1]]  (background flow t->t+1 is
(-camera_dx[t+1], 0)), except under the frame-fixed hood (rows >= hood_top). Pixel noise is
part of the world (fixed pattern), so the equality holds for image bytes as well as labels.
Static objects are drawn into the panorama once; cars and persons move independently in 3-D at
constant velocity (metres per frame) and are drawn per frame, in front of or behind static ones.
Their per-frame positions and boxes (shadows included) are in the metadata (see data/README.md).

On-disk layout under out_dir (lists hold "<image_rel> <label_rel>" per line):
  leftImg8bit/{split}/toycity/toycity_{scene:06d}_000019_leftImg8bit.png
  gtFine/{split}/toycity/toycity_{scene:06d}_000019_gtFine_labelTrainIds.png
  leftImg8bit_sequence/{split}/toycity/toycity_{seq:06d}_{frame:06d}_leftImg8bit.png
  gtFine_sequence/{split}/toycity/toycity_{seq:06d}_{frame:06d}_gtFine_labelTrainIds.png
  list/{train,val,video_train,video_val}.txt, videos.json

Limits: a run is checked before anything is allocated or written. The images it writes may
total at most --max_megapixels (default 2048, about 25 x the default set and some 4 GB of PNGs),
and its estimated peak memory (see the memory model below `MAX_MEMORY_GB`) at most
--max_memory_gb (default 4); the automatic worker count is lowered to fit. Raise either flag
for a bigger run.

Usage: python -m data.toycity --out_dir DIR [--num_train N ... --seed S]
"""

import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
from PIL import Image

CLASS_NAMES = (
    'road',
    'sidewalk',
    'building',
    'wall',
    'fence',
    'pole',
    'traffic light',
    'traffic sign',
    'vegetation',
    'terrain',
    'sky',
    'person',
    'rider',
    'car',
    'truck',
    'bus',
    'train',
    'motorcycle',
    'bicycle',
)
# fmt: off
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER,
 CAR) = range(14)
# fmt: on
IGNORE = 255
GAP = 254  # segment kind "nothing here" (never written to a label)
USED_TRAIN_IDS = tuple(i for i in range(CAR + 1) if i != RIDER)  # no riders in the toy city

MIN_SIZE, MAX_SIZE = 64, 4096
MAX_MEGAPIXELS = 2048.0  # default limit on the pixels a run writes (--max_megapixels)
MAX_MEMORY_GB = 4.0  # default limit on a run's estimated peak memory, 1e9 bytes (--max_memory_gb)
# Memory model: peak bytes per pixel, measured (ru_maxrss, NumPy 1.26, CPython 3.11) for scenes at
# 1024x2048 and 2048x4096 (113-123 B/px) and sequences at 256x512 x 30 and 300 frames and
# 512x1024 x 100 frames, then rounded up so the model is an upper bound.
SCENE_BYTES_PER_PIXEL = 128  # one scene: per-pixel rays, textures, noise, float image
PANORAMA_BYTES_PER_PIXEL = 128  # a video's static world, rendered H x (W + MAX_PAN x (T - 1))
FRAME_BYTES_PER_PIXEL = 8  # every frame's uint8 RGB + label is kept, then np.stack copies them
COMPOSE_BYTES_PER_PIXEL = 64  # temporaries of composing one frame
MAX_PAN = 5  # pixels per frame the camera pans at most (speed 1..4, jitter +-1)
META_BYTES_PER_FRAME = 16 * 1024  # one video frame's list entries and object tracks
META_BYTES_PER_SCENE = 1024  # one scene's list entries
WORKER_BYTES = 128 * 2**20  # a spawned worker process: interpreter, NumPy, Pillow
FPS = 17.0  # Cityscapes frame rate; velocities below are per second / FPS
Z_NEAR = 2.0  # objects nearer than this (metres) are not drawn
CITY = 'toycity'
TWO_PI = 2.0 * np.pi

# Colour tables as rows of colours, not one number triple per line:
# fmt: off
PALETTE = {  # RGB base colours, jittered per instance; deliberately overlapping between classes
    ROAD: ((78, 78, 82), (96, 94, 92), (112, 110, 114), (70, 72, 70)),
    SIDEWALK: ((152, 146, 140), (172, 150, 140), (128, 128, 134), (158, 124, 112)),
    BUILDING: ((150, 140, 130), (185, 170, 150), (120, 112, 108),
               (165, 95, 75), (205, 200, 190), (105, 112, 125)),
    WALL: ((176, 172, 150), (128, 134, 140), (148, 128, 100)),
    FENCE: ((125, 100, 75), (95, 100, 95), (150, 150, 140)),
    VEGETATION: ((60, 100, 40), (80, 122, 52), (45, 82, 38), (95, 112, 60)),
    TERRAIN: ((112, 132, 72), (142, 138, 82), (124, 110, 78), (92, 124, 62)),
    GAP: ((0, 0, 0),),
}
GLASS = ((45, 55, 70), (70, 85, 100), (35, 40, 45), (90, 110, 130))
CAR_COLORS = ((200, 200, 205), (30, 30, 35), (140, 20, 25), (25, 50, 120), (120, 125, 130),
              (230, 230, 230), (90, 100, 60), (180, 150, 40), (60, 60, 65))
# fmt: on
SKIN = ((230, 190, 160), (190, 140, 100), (120, 80, 55), (250, 215, 190))
HAIR = ((30, 25, 20), (90, 60, 30), (200, 170, 100), (150, 150, 150))
TROUSERS = ((40, 45, 70), (30, 30, 30), (150, 130, 95), (90, 90, 95))
SIGN_COLORS = (
    ((240, 240, 240), (35, 85, 175)),
    ((200, 30, 35), (240, 240, 240)),  # (rim, face)
    ((200, 30, 35), (240, 240, 240)),
    ((240, 240, 240), (235, 190, 40)),
)
# Thin objects are drawn thicker than real ones. ICNet was designed for 1024x2048 Cityscapes frames
# and predicts at 1/4 of its input (its labels are nearest-resized to 1/4 for the loss); at this
# dataset's 256x512 a real 0.2 m pole ten metres away is 2 px wide, i.e. half an output cell, and
# cannot be learned. Widths below (and the nearer placement of poles and persons) give thin
# classes Cityscapes-like pixel widths at 256x512.
LIGHT_BOX = (0.7, 1.6)  # traffic light housing width, height (m)
POLE_WIDTH = (0.32, 0.55)  # m
PERSON_WIDTH = 1.5  # persons are this much wider than life
POLE_MAX_Z, PERSON_MAX_Z = 45.0, 32.0  # m; nothing thinner is placed farther away
LAMPS = ((255, 60, 40), (255, 200, 40), (60, 255, 120))  # red / yellow / green, top to bottom

# Plane segments: kind -> (probability, length range m, height range m).
NEAR_SEGMENTS = {
    BUILDING: (0.4, (8, 30), (6, 25)),
    VEGETATION: (0.2, (6, 20), (3, 10)),
    WALL: (0.18, (6, 18), (1.0, 2.4)),
    FENCE: (0.15, (6, 18), (1.2, 2.5)),
    GAP: (0.07, (3, 10), (0, 0)),
}
FAR_SEGMENTS = {
    BUILDING: (0.55, (10, 40), (8, 35)),
    VEGETATION: (0.3, (8, 25), (5, 14)),
    GAP: (0.15, (5, 15), (0, 0)),
}
FRONT_SEGMENTS = {
    BUILDING: (0.6, (8, 30), (8, 40)),
    VEGETATION: (0.3, (6, 20), (5, 15)),
    GAP: (0.1, (4, 12), (0, 0)),
}


def _pick(rng, palette, jitter=18.0):
    base = np.asarray(palette[rng.integers(len(palette))], np.float32)
    return np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255).astype(np.float32)


def smooth_noise(rng, height, width, cell):
    """Value noise ~N(0, 1): a random grid every `cell` pixels, smoothly interpolated."""
    grid = rng.standard_normal((height // cell + 2, width // cell + 2), dtype=np.float32)

    def weights(n):
        t = (np.arange(n, dtype=np.float32) + 0.5) / cell
        i = t.astype(int)
        t -= i
        return i, t * t * (3 - 2 * t)  # smoothstep

    (y0, fy), (x0, fx) = weights(height), weights(width)
    rows = grid[:, x0] * (1 - fx) + grid[:, x0 + 1] * fx  # interpolate along x, then along y
    return rows[y0] * (1 - fy)[:, None] + rows[y0 + 1] * fy[:, None]


def _hash01(i, j, salt=0):
    """Deterministic pseudo-random number in [0, 1) per integer cell (i, j) (and salt)."""
    h = (
        (np.asarray(i).astype(np.int64).astype(np.uint32) * np.uint32(73856093))
        ^ (np.asarray(j).astype(np.int64).astype(np.uint32) * np.uint32(19349663))
        ^ np.uint32(salt)
    )
    h ^= h >> np.uint32(15)
    h *= np.uint32(2246822519)
    h ^= h >> np.uint32(13)
    return (h & np.uint32(0xFFFF)).astype(np.float32) / 65536.0


def _value_noise(x, y):
    """Smooth noise in [0, 1) at continuous coordinates (interpolated _hash01 lattice)."""
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    top = _hash01(x0, y0) * (1 - fx) + _hash01(x0 + 1, y0) * fx
    bottom = _hash01(x0, y0 + 1) * (1 - fx) + _hash01(x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


# ----------------------------------------------------------------------------- world sampling
def _segments(rng, axis, offset, start, stop, table):
    """A plane (X = offset for axis 'z', Z = offset for axis 'x') cut into random segments."""
    kinds = list(table)
    probs = np.array([table[k][0] for k in kinds])
    bounds, rows = [start], []
    while bounds[-1] < stop:
        kind = kinds[rng.choice(len(kinds), p=probs / probs.sum())]
        _, (l0, l1), (h0, h1) = table[kind]
        bounds.append(bounds[-1] + rng.uniform(l0, l1))
        rows.append(
            dict(
                kind=kind,
                height=rng.uniform(h0, h1),
                color=_pick(rng, PALETTE[kind]),
                tex=rng.integers(3),
                ws=rng.uniform(1.8, 3.5),
                wfrac=rng.uniform(0.35, 0.6),
                fh=rng.uniform(2.8, 3.6),
                woff=rng.uniform(0, 1),
                shop=rng.random() < 0.5,
                glass=_pick(rng, GLASS),
                wave=rng.uniform(2, 7),
                phase=rng.uniform(0, TWO_PI),
            )
        )
    plane = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    plane.update(axis=axis, offset=offset, bounds=np.array(bounds))
    return plane


def _new_object(rng, kind, X, Z, vel=(0.0, 0.0)):
    o = dict(
        kind=kind,
        X=X,
        Z=Z,
        vel=(float(vel[0]), float(vel[1])),
        seed=int(rng.integers(2**31)),
        noise=rng.uniform(3, 9),
        phase=rng.uniform(0, TWO_PI),
        omega=0.0,
        swing=0.0,
    )
    if kind == 'car':
        w, h = rng.uniform(1.6, 2.0), rng.uniform(1.35, 1.9)
        o.update(
            cls=CAR,
            half=w / 2,
            top=h,
            depth=2.2,
            shadow_half=w / 2,
            front=vel[1] < 0,
            color=_pick(rng, CAR_COLORS, 25),
            glass=_pick(rng, GLASS),
        )
    elif kind == 'person':
        h = rng.uniform(1.5, 1.9)
        o.update(
            cls=PERSON,
            half=0.3 * PERSON_WIDTH * h / 1.75,
            top=h,
            depth=0.4,
            shadow_half=0.25,
            skin=_pick(rng, SKIN, 10),
            hair=_pick(rng, HAIR, 10),
            shirt=rng.uniform(20, 230, 3).astype(np.float32),
            trousers=_pick(rng, TROUSERS, 15),
            omega=TWO_PI * 0.9 / FPS * (vel != (0.0, 0.0)),
            swing=0.18 if vel[0] else 0.05,
        )
    elif kind == 'pole':
        attach = rng.choice(['none', 'sign', 'light'], p=[0.3, 0.4, 0.3])
        pw, size = rng.uniform(*POLE_WIDTH), rng.uniform(0.9, 1.3)
        top = rng.uniform(2.6, 3.6) if attach == 'light' else rng.uniform(3.5, 7.5)  # lights on top
        o.update(
            cls=POLE,
            pw=pw,
            pole_top=top,
            attach=attach,
            size=size,
            shape=rng.integers(4),
            sign_h=min(top - 0.6 * size, rng.uniform(2.3, 3.2)),
            lit=rng.integers(3),
            color=_pick(rng, ((110, 110, 115), (50, 60, 55)), 15),
            depth=0.3,
            shadow_half=pw,
            half=max(pw / 2, 0.5 * size if attach == 'sign' else 0.25),
            top=top + (LIGHT_BOX[1] if attach == 'light' else 0.0),
        )
    else:  # tree on the sidewalk
        rc, trunk = rng.uniform(1.2, 2.4), rng.uniform(1.8, 3.0)
        o.update(
            cls=VEGETATION,
            rc=rc,
            trunk_h=trunk,
            trunk_w=rng.uniform(0.1, 0.2),
            cy=trunk + 0.8 * rc,
            half=1.25 * rc,
            top=trunk + 2.1 * rc,
            depth=0.5,
            shadow_half=0.8 * rc,
            color=_pick(rng, PALETTE[VEGETATION], 12),
            bark=_pick(rng, ((90, 70, 50), (70, 60, 55)), 10),
        )
    return o


def _place_objects(rng, st):
    """Static poles, trees and parked cars; moving traffic and pedestrians."""
    R, S, objs = st['R'], st['S'], []

    def add(kind, X, Z, vel=(0.0, 0.0)):
        o = _new_object(
            rng, kind, X, Z, vel
        )  # always sampled: keeps the rng stream layout-independent
        if all(
            abs(X - p['X']) > o['half'] + p['half'] or abs(Z - p['Z']) > o['depth'] + p['depth']
            for p in objs
        ):
            objs.append(o)

    for side, sign in enumerate((-1, 1)):
        z = rng.uniform(4, 14)
        while z < POLE_MAX_Z:
            add('pole', sign * (R + rng.uniform(0.3, 0.6)), z)
            z += rng.uniform(8, 18)
        if S[side] > 2.2 and rng.random() < 0.5:
            z = rng.uniform(6, 14)
            while z < 70:
                add('tree', sign * (R + 0.6 * S[side]), z)
                z += rng.uniform(8, 16)
        if rng.random() < 0.6:
            z = rng.uniform(5, 15)
            for _ in range(rng.integers(1, 6)):
                add('car', sign * (R - 1.2), z)
                z += rng.uniform(5.5, 10)
    for _ in range(rng.integers(1, 4)):  # traffic: oncoming lane X < 0, same direction X > 0
        lane = rng.choice([-1, 1])
        vz = -rng.uniform(6, 14) if lane < 0 else rng.uniform(-3, 6)
        add('car', lane * R / 2 + rng.uniform(-0.3, 0.3), rng.uniform(7, 60), (0.0, vz / FPS))
    for _ in range(rng.integers(2, 9)):
        speed = rng.uniform(1.0, 1.6) / FPS * rng.choice([-1, 1]) * (rng.random() < 0.8)
        if rng.random() < 0.2:  # crossing the road
            add(
                'person',
                rng.uniform(-R + 0.5, R - 0.5),
                rng.uniform(6, 0.8 * PERSON_MAX_Z),
                (speed, 0.0),
            )
        else:
            side = rng.integers(2)
            X = (2 * side - 1) * rng.uniform(R + 0.5, R + max(S[side] - 0.3, 0.6))
            add('person', X, rng.uniform(4, PERSON_MAX_Z), (0.0, speed))
    return objs


def _build_world(rng, height, width, pano_width, xv):
    """Sample everything about one scene: camera, street, facade planes, lighting, objects."""
    # Focal length near Cityscapes' (2262 px at width 2048, i.e. 1.1 x width).
    cam = dict(
        f=width * rng.uniform(0.95, 1.25),
        yh=height * rng.uniform(0.38, 0.5),
        hc=rng.uniform(1.2, 1.6),
        xv=xv,
    )
    R, S = rng.uniform(3.0, 6.0), rng.uniform(2.0, 4.5, 2)
    T = np.where(rng.random(2) < 0.6, rng.uniform(1.0, 4.0, 2), 0.0)  # grass strip before facades
    st = dict(
        R=R,
        S=S,
        Lb=R + S + T,
        beyond=np.where(T > 0, TERRAIN, SIDEWALK),
        markings=rng.random() < 0.8,
        cross=None,
    )
    if rng.random() < 0.35:
        c0 = rng.uniform(15, 45)
        st['cross'] = (c0, c0 + rng.uniform(8, 14))
    z_end = rng.uniform(60, 140)
    z_front = z_end + rng.uniform(10, 60)
    planes = []
    for sign, lb in zip((-1, 1), st['Lb']):
        planes.append(_segments(rng, 'z', sign * lb, 0.0, z_end, NEAR_SEGMENTS))
        planes.append(
            _segments(rng, 'z', sign * (lb + rng.uniform(6, 20)), 0.0, z_front, FAR_SEGMENTS)
        )
    planes.append(_segments(rng, 'x', z_front, -2 * z_front, 2 * z_front, FRONT_SEGMENTS))
    sun = rng.choice([-1, 1])  # facades on this side are in shade and shade the street
    for pl in planes:
        in_shade = pl['axis'] == 'z' and np.sign(pl['offset']) == sun
        pl['shade'] = rng.uniform(0.65, 0.85) if in_shade else rng.uniform(0.95, 1.1)
    clear = rng.random() < 0.6
    light = dict(
        sun=sun,
        shadow=rng.uniform(0.5, 0.75),
        shadow_len=rng.uniform(0.2, 0.8),
        gain=rng.uniform(0.7, 1.25),
        contrast=rng.uniform(0.75, 1.2),
        cast=rng.uniform(0.9, 1.1, 3).astype(np.float32),
        noise=rng.uniform(2, 7),
    )
    colors = dict(
        road=_pick(rng, PALETTE[ROAD], 10),
        sidewalk=_pick(rng, PALETTE[SIDEWALK]),
        terrain=_pick(rng, PALETTE[TERRAIN]),
        marking=_pick(rng, ((215, 215, 205), (220, 190, 60)), 10),  # white or yellow
        sky_top=_pick(rng, ((70, 120, 200),) if clear else ((150, 155, 165),), 15),
        sky_horizon=_pick(rng, ((170, 195, 225),) if clear else ((195, 198, 205),), 10),
        clouds=rng.uniform(0.0, 0.8),
    )
    return dict(
        height=height,
        width=width,
        pano_width=pano_width,
        cam=cam,
        street=st,
        planes=planes,
        light=light,
        colors=colors,
        hood=_make_hood(rng, height, width),
        objects=_place_objects(rng, st),
    )


def _make_hood(rng, height, width):
    """Ego-vehicle hood at the bottom of the frame (label 255), or None."""
    if rng.random() < 0.4:
        return None
    depth = rng.uniform(0.03, 0.07) * height
    x = (np.arange(width) + 0.5 - width / 2) / (width / 2)
    edge = height - depth * (1 - 0.6 * x**2)
    mask = (np.arange(height) + 0.5)[:, None] > edge[None, :]
    base = _pick(rng, CAR_COLORS, 20) * 0.6
    rows = np.nonzero(mask)[0]
    color = base * (1.2 - 0.4 * (rows - edge.min()) / depth)[:, None] + rng.normal(
        0, 3, (rows.size, 3)
    )
    return dict(mask=mask, color=color.astype(np.float32), top=int(np.floor(edge.min() + 0.5)))


# ----------------------------------------------------------------------------- background
def _ground(w, X, Z, ns, nf):
    """Labels and colours of ground pixels at ground coordinates (X, Z) metres."""
    st, c = w['street'], w['colors']
    R, ax, side = st['R'], np.abs(X), (X > 0).astype(int)
    lab = np.where(ax < R, ROAD, np.where(ax < R + st['S'][side], SIDEWALK, st['beyond'][side]))
    cross = (
        np.zeros(X.shape, bool)
        if st['cross'] is None
        else (Z > st['cross'][0]) & (Z < st['cross'][1])
    )
    lab[cross] = ROAD
    col = np.empty(X.shape + (3,), np.float32)
    for cls, key, amp in (
        (ROAD, 'road', (0.08, 0.06)),
        (SIDEWALK, 'sidewalk', (0.05, 0.04)),
        (TERRAIN, 'terrain', (0.22, 0.18)),
    ):
        m = lab == cls
        col[m] = c[key] * (1 + amp[0] * ns[m] + amp[1] * nf[m])[:, None]
    road = lab == ROAD
    if st['markings']:
        mark = (np.abs(X) < 0.08) & (np.mod(Z, 9.0) < 4.0) | (ax > R - 0.35) & (ax < R - 0.2)
        if st['cross'] is not None:
            mark |= (Z > st['cross'][0] - 3.5) & (Z < st['cross'][0] - 0.5) & (np.mod(X, 1.0) < 0.5)
        col[road & mark & ~cross] = c['marking']
    walk = lab == SIDEWALK
    tile = walk & ((np.mod(X, 0.5) < 0.03) | (np.mod(Z, 0.5) < 0.03))
    col[tile] *= 0.85
    col[walk & (ax < R + 0.2)] *= 1.15  # curb stones
    # Shadow of the sun-side facades: a strip of width shadow_len * facade height.
    sun, L = w['light']['sun'], w['light']
    near = w['planes'][0 if sun < 0 else 2]
    seg = np.clip(np.searchsorted(near['bounds'], Z, side='right') - 1, 0, near['kind'].size - 1)
    tall = np.isin(near['kind'][seg], (BUILDING, WALL)) & (Z < near['bounds'][-1]) & ~cross
    shadow = tall & (X * sun > st['Lb'][(sun + 1) // 2] - L['shadow_len'] * near['height'][seg])
    col[shadow] *= L['shadow']
    return lab.astype(np.uint8), col


def _building_texture(pl, seg, rel, up, col, ns, nf):
    """Bricks or panels, a grid of windows (per-window reflection), shop windows, a cornice."""
    ws, fh, height, tex, woff = (pl[k][seg] for k in ('ws', 'fh', 'height', 'tex', 'woff'))
    rows = np.floor(up / 0.3)
    col[
        (tex == 1) & ((np.mod(up, 0.3) < 0.05) | (np.mod(rel + 0.3 * np.mod(rows, 2), 0.6) < 0.05))
    ] *= 1.18
    col[(tex == 2) & (np.mod(rel, 1.5) < 0.1)] *= 0.8  # panel seams
    ra, rb, ww = np.mod(rel - woff, ws), np.mod(up, fh), ws * pl['wfrac'][seg]
    storey = (up > fh) & (up < height - 0.8)
    win = storey & (ra < ww) & (rb > 0.35 * fh) & (rb < 0.85 * fh)
    sill = storey & (ra < ww + 0.1) & (rb > 0.35 * fh - 0.12) & (rb <= 0.35 * fh)
    shop = pl['shop'][seg] & (up > 0.3) & (up < 0.8 * fh) & (np.mod(rel, 2 * ws) < 1.3 * ws)
    glass = (
        pl['glass'][seg]
        * (0.6 + 0.8 * _hash01(np.floor((rel - woff) / ws), np.floor(up / fh)))[:, None]
    )
    col[sill] *= 1.3
    col[win] = glass[win]
    col[shop] = 0.7 * glass[shop]
    col[up > height - 0.35] *= 0.75  # cornice
    return col


def _vegetation_texture(pl, seg, rel, up, col, ns, nf):
    return col * ((1 + 0.25 * ns + 0.25 * nf) * (0.75 + 0.25 * np.clip(up / 3, 0, 1)))[:, None]


def _wall_texture(pl, seg, rel, up, col, ns, nf):
    # Large stone blocks with dark mortar and a bright coping: unlike any building storey.
    col *= (
        0.9 + 0.2 * _hash01(np.floor((rel + 0.4 * np.floor(up / 0.4)) / 0.8), np.floor(up / 0.4), 7)
    )[:, None]
    col[(np.mod(up, 0.4) < 0.05) | (np.mod(rel + 0.4 * np.floor(up / 0.4), 0.8) < 0.05)] *= 0.6
    col[up > pl['height'][seg] - 0.18] *= 1.35  # coping
    return col


def _fence_texture(pl, seg, rel, up, col, ns, nf):
    planks = np.mod(rel, 0.15) < 0.025
    mesh = (np.mod(rel, 0.2) > 0.05) & (np.mod(up, 0.9) > 0.08)
    col[np.where(pl['tex'][seg] == 0, planks, mesh)] *= 0.45  # plank gaps / see-through mesh
    return col


def _facade(pl, a, up, seg, ns, nf):
    """Labels and colours of plane pixels (a: metres along the plane, up: metres above ground)."""
    kind, rel = pl['kind'][seg], (a - pl['bounds'][seg]).astype(np.float32)
    up = up.astype(np.float32)
    col = pl['color'][seg] * (1 + 0.06 * ns + 0.05 * nf)[:, None]
    for k, texture in (
        (BUILDING, _building_texture),
        (VEGETATION, _vegetation_texture),
        (WALL, _wall_texture),
        (FENCE, _fence_texture),
    ):
        i = np.nonzero(kind == k)[0]
        if i.size:
            col[i] = texture(pl, seg[i], rel[i], up[i], col[i], ns[i], nf[i])
    return kind.astype(np.uint8), col * pl['shade']


def _render_background(rng, w):
    """The static world (no objects) as float RGB [H, Wp, 3] and labels [H, Wp]."""
    cam, H, Wp = w['cam'], w['height'], w['pano_width']
    f, yh, hc = cam['f'], cam['yh'], cam['hc']
    dx = (np.arange(Wp) + 0.5 - cam['xv'])[None, :]
    dy = (np.arange(H) + 0.5 - yh)[:, None]
    split = int(np.searchsorted(dx[0], 0.0))  # columns [0, split) look left of the street axis
    cross = w['street']['cross']
    hits = []  # per plane: (rows, cols, a, up, seg) of the pixels where it was the nearest so far
    with np.errstate(all='ignore'):
        zg = np.where(dy > 0, f * hc / dy, np.inf)
        zbest = np.repeat(np.broadcast_to(zg, (H, 1)), Wp, axis=1)
        who = np.where(np.isfinite(zbest), 0, -1)  # -1 sky, 0 ground, p: plane p - 1
        for p, pl in enumerate(w['planes'], start=1):
            if pl['axis'] == 'z':  # side plane X = offset, only seen on its side of the axis
                c0 = 0 if pl['offset'] < 0 else split
                cols = slice(c0, split) if pl['offset'] < 0 else slice(split, Wp)
                z = f * pl['offset'] / dx[:, cols]
                a = z
            else:  # frontal plane Z = offset
                c0, cols = 0, slice(0, Wp)
                z, a = np.full((1, Wp), pl['offset']), dx * pl['offset'] / f
            up = hc - dy * z / f  # height of the hit point above the ground
            inside = (a >= pl['bounds'][0]) & (a < pl['bounds'][-1])
            r, c = np.nonzero((z < zbest[:, cols]) & (up >= 0) & inside)
            a, up = a[0, c], up[r, c]
            seg = np.clip(
                np.searchsorted(pl['bounds'], a, side='right') - 1, 0, pl['kind'].size - 1
            )
            kind = pl['kind'][seg]
            wave = 0.8 + 0.2 * np.sin(dx[0, c + c0] / (6 * pl['wave'][seg]) + pl['phase'][seg])
            ok = (up < pl['height'][seg] * np.where(kind == VEGETATION, wave, 1.0)) & (kind != GAP)
            if pl['axis'] == 'z' and cross is not None:
                ok &= ~((a > cross[0]) & (a < cross[1]))
            r, c = r[ok], c[ok] + c0
            zbest[r, c], who[r, c] = z[0, c - c0], p
            hits.append((r, c, a[ok], up[ok], seg[ok]))
    img = np.zeros((H, Wp, 3), np.float32)
    lbl = np.full((H, Wp), IGNORE, np.uint8)
    ns, nf = smooth_noise(rng, H, Wp, 12), smooth_noise(rng, H, Wp, 3)
    col, m = w['colors'], who == -1
    t = np.clip(-np.broadcast_to(dy, (H, Wp))[m] / yh, 0, 1)[:, None]
    cloud = np.clip(0.6 * smooth_noise(rng, H, Wp, 40)[m] + col['clouds'] - 0.6, 0, 1)[:, None]
    img[m] = (col['sky_horizon'] * (1 - t) + col['sky_top'] * t) * (1 - cloud) + 235 * cloud
    lbl[m] = SKY
    r, c = np.nonzero(who == 0)
    lbl[r, c], img[r, c] = _ground(w, dx[0, c] * zg[r, 0] / f, zg[r, 0], ns[r, c], nf[r, c])
    for p, (pl, (r, c, a, up, seg)) in enumerate(zip(w['planes'], hits), start=1):
        keep = who[r, c] == p  # not overwritten by a nearer plane
        r, c = r[keep], c[keep]
        lbl[r, c], img[r, c] = _facade(pl, a[keep], up[keep], seg[keep], ns[r, c], nf[r, c])
    img += w['light']['noise'] * rng.standard_normal(img.shape, dtype=np.float32)
    return img, lbl


# ----------------------------------------------------------------------------- objects
def _car_parts(o, a, b, lab, col):
    hw, top, aa = o['half'], o['top'], np.abs(a)
    belt = 0.55 * top  # top of the lower body
    wheel = (b >= 0) & (b < 0.4) & (aa > hw - 0.4) & (aa < hw - 0.04)
    lower = (b >= 0.24) & (b < belt) & (aa < hw)
    cabin = (b >= belt) & (b < top) & (aa < hw - 0.1 - 0.5 * (b - belt))
    glass = cabin & (b > belt + 0.06) & (b < top - 0.07) & (aa < hw - 0.22 - 0.5 * (b - belt))
    lamp = lower & (b > belt - 0.2) & (b < belt - 0.06) & (aa > hw - 0.34)
    plate = (b > 0.4) & (b < 0.52) & (aa < 0.26)
    body = o['color'] * (0.8 + 0.3 * np.clip(b / top, 0, 1))[..., None]
    for m, value in (
        (wheel, 28.0),
        (lower | cabin, body),
        (lower & (b < 0.34), 0.55 * body),
        (lamp, (240, 240, 200) if o['front'] else (200, 30, 30)),
        (plate, (215, 215, 205)),
        (glass, o['glass'] * (0.7 + 0.6 * np.clip((b - belt) / (top - belt), 0, 1))[..., None]),
    ):
        col[m] = value[m] if np.ndim(value) == 3 else value
        lab[m] = CAR


def _person_parts(o, a, b, phase, lab, col):
    k = o['top'] / 1.75
    p, q = a / (k * PERSON_WIDTH), b / k
    s = o['swing'] * np.sin(phase) * (0.9 - q)
    leg = (q < 0.9) & ((np.abs(p + 0.085 + s) < 0.075) | (np.abs(p - 0.085 - s) < 0.075))
    arm = (q >= 0.8) & (q < 1.45) & (np.abs(p) >= 0.17) & (np.abs(p) < 0.25)
    torso = (q >= 0.85) & (q < 1.5) & (np.abs(p) < 0.17 + 0.03 * (q - 0.85))
    head = p**2 + (q - 1.64) ** 2 < 0.115**2
    neck = (q >= 1.49) & (q < 1.55) & (np.abs(p) < 0.05)
    for m, value in (
        (leg, o['trousers']),
        (leg & (q < 0.06), 30.0),
        (arm, 0.85 * o['shirt']),
        (arm & (q < 0.88), o['skin']),
        (torso, o['shirt']),
        (neck, o['skin']),
        (head, o['skin']),
        (head & (q > 1.68), o['hair']),
    ):
        col[m], lab[m] = value, PERSON


def _pole_parts(o, a, b, lab, col):
    r, top = o['pw'] / 2, o['pole_top']
    pole = (np.abs(a) < r) & (b >= 0) & (b < top)
    col[pole] = (o['color'] * (1 - 0.35 * (a / r) ** 2)[..., None])[pole]
    lab[pole] = POLE
    if o['attach'] == 'sign':
        h, da, db = o['size'] / 2, np.abs(a), b - o['sign_h']
        shape = (
            (da < h) & (np.abs(db) < 0.75 * h),
            da**2 + db**2 < h**2,
            (db > -0.7 * h) & (da < (0.9 * h - db) / 1.6),
            da + np.abs(db) < h,
        )
        rim = shape[o['shape']]
        face = (
            (da < 0.8 * h) & (np.abs(db) < 0.55 * h),
            da**2 + db**2 < (0.72 * h) ** 2,
            (db > -0.5 * h) & (da < (0.62 * h - db) / 1.6),
            da + np.abs(db) < 0.75 * h,
        )
        col[rim], col[face[o['shape']]] = SIGN_COLORS[o['shape']]
        lab[rim] = SIGN
    elif o['attach'] == 'light':
        box = (np.abs(a) < LIGHT_BOX[0] / 2) & (b >= top) & (b < top + LIGHT_BOX[1])
        col[box], lab[box] = (35, 35, 30), LIGHT
        for i, hl in enumerate(np.array([0.83, 0.5, 0.17]) * LIGHT_BOX[1]):
            lamp = a**2 + (b - top - hl) ** 2 < (0.3 * LIGHT_BOX[0]) ** 2
            col[lamp] = LAMPS[i] if i == o['lit'] else np.array(LAMPS[i]) * 0.25


def _tree_parts(o, a, b, lab, col):
    trunk = (np.abs(a) < o['trunk_w']) & (b >= 0) & (b < o['trunk_h'] + 0.3)
    dy = b - o['cy']
    ang = np.arctan2(dy, a)
    radius = 1 + 0.12 * np.sin(5 * ang + o['phase']) + 0.07 * np.sin(11 * ang + 2 * o['phase'])
    crown = (a / o['rc']) ** 2 + (dy / (1.15 * o['rc'])) ** 2 < radius**2
    clumps = 0.7 + 0.6 * _value_noise(a / 0.35 + 100 * o['phase'], dy / 0.35)  # leaf clusters
    col[trunk] = o['bark']
    col[crown] = (o['color'] * clumps[..., None])[crown]
    lab[trunk | crown] = VEGETATION


def _project(w, o, X, Z):
    """Scale (px/m), foot point (u, v), shadow half-height (rows) and the box [x0, y0, x1, y1)
    (shadow included) of an object at (X, Z), in panorama pixels."""
    cam = w['cam']
    s = cam['f'] / Z
    u, vf = cam['xv'] + X * s, cam['yh'] + cam['hc'] * s
    sh = max(1.0, 0.8 * cam['hc'] * s / Z)  # the shadow spans +-0.8 m on the ground
    x0, x1 = int(np.floor(u - 1.15 * o['half'] * s)), int(np.ceil(u + 1.15 * o['half'] * s)) + 1
    y0, y1 = int(np.floor(vf - o['top'] * s)), int(np.ceil(vf + sh)) + 1
    return s, u, vf, sh, [x0, y0, x1, y1]


def _draw(img, lbl, zbuf, o, X, Z, phase, w, cam_x):
    """Paint one object where it is nearer than zbuf (object depths); return its box
    [x0, y0, x1, y1) in frame pixels (shadow included), or None if behind the camera."""
    if Z < Z_NEAR:
        return None
    s, u, vf, sh, (x0, y0, x1, y1) = _project(w, o, X, Z)
    H, W = lbl.shape
    fx0, fx1, fy0, fy1 = max(x0 - cam_x, 0), min(x1 - cam_x, W), max(y0, 0), min(y1, H)
    if fx0 < fx1 and fy0 < fy1:
        xs, ys = np.arange(fx0, fx1) + cam_x + 0.5, np.arange(fy0, fy1) + 0.5  # panorama coords
        a, b = np.broadcast_arrays(((xs - u) / s)[None, :], ((vf - ys) / s)[:, None])
        lab = np.full(a.shape, IGNORE, np.uint8)
        col = np.zeros(a.shape + (3,), np.float32)
        if o['kind'] == 'person':
            _person_parts(o, a, b, phase, lab, col)
        else:
            {'car': _car_parts, 'pole': _pole_parts, 'tree': _tree_parts}[o['kind']](
                o, a, b, lab, col
            )
        shadow = ((a / (1.1 * o['shadow_half'])) ** 2 + ((ys[:, None] - vf) / sh) ** 2 < 1) & (
            lab == IGNORE
        )
        # Fixed noise pattern in box coordinates (~N(0, 1) from two hashes), so a static object is
        # identical in every frame; only the visible part is computed.
        i = (np.arange(fx0, fx1) + cam_x - x0)[None, :, None] * 3 + np.arange(3)
        j = np.arange(fy0 - y0, fy1 - y0)[:, None, None]
        noise = (_hash01(i, j, o['seed']) + _hash01(i, j, o['seed'] + 1) - 1) * (
            o['noise'] * 6**0.5
        )
        region, depth = img[fy0:fy1, fx0:fx1], zbuf[fy0:fy1, fx0:fx1]
        front = Z < depth
        m = (lab != IGNORE) & front
        region[shadow & front] *= w['light']['shadow']
        region[m] = col[m] + noise[m]
        lbl[fy0:fy1, fx0:fx1][m], depth[m] = lab[m], Z
    return [x0 - cam_x, y0, x1 - cam_x, y1]


def _state(o, t):
    return o['X'] + o['vel'][0] * t, o['Z'] + o['vel'][1] * t, o['phase'] + o['omega'] * t


def _moving(w):
    return [i for i, o in enumerate(w['objects']) if o['vel'] != (0.0, 0.0)]


def _static_layers(rng, w):
    """Panorama (image, labels, object depth) of the background plus all static objects."""
    img, lbl = _render_background(rng, w)
    zbuf = np.full(lbl.shape, np.inf, np.float32)
    moving = _moving(w)
    static = [o for i, o in enumerate(w['objects']) if i not in moving]
    for o in sorted(static, key=lambda o: -o['Z']):  # far to near
        _draw(img, lbl, zbuf, o, o['X'], o['Z'], o['phase'], w, 0)
    return img, lbl, zbuf


def _compose(w, layers, cam_x, t):
    """Frame t: crop the static panorama at cam_x, add moving objects, hood and lighting.
    Returns (image, labels, {object index: (X, Z, phase)}, {object index: box})."""
    W = w['width']
    img, lbl, zbuf = (layer[:, cam_x : cam_x + W].copy() for layer in layers)
    states = {i: _state(w['objects'][i], t) for i in _moving(w)}
    boxes = {}
    for i in sorted(states, key=lambda i: -states[i][1]):
        boxes[i] = _draw(img, lbl, zbuf, w['objects'][i], *states[i], w, cam_x)
    if w['hood'] is not None:
        img[w['hood']['mask']], lbl[w['hood']['mask']] = w['hood']['color'], IGNORE
    L = w['light']
    img = ((img - 128) * L['contrast'] + 128) * (L['gain'] * L['cast'])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lbl, states, boxes


# ----------------------------------------------------------------------------- public API
def _check_size(height, width):
    for name, v in (('height', height), ('width', width)):
        if not MIN_SIZE <= v <= MAX_SIZE:
            raise ValueError(f'{name} must be in [{MIN_SIZE}, {MAX_SIZE}] (got {v})')


def render_scene(rng, height=256, width=512):
    """One street scene: (image uint8 [H, W, 3] RGB, label uint8 [H, W] trainIds / 255)."""
    _check_size(height, width)
    w = _build_world(rng, height, width, width, width * (0.5 + rng.uniform(-0.1, 0.1)))
    img, lbl, _, _ = _compose(w, _static_layers(rng, w), 0, 0)
    return img, lbl


def task_bytes(height, width, frames=None):
    """Estimated peak bytes of rendering one scene (frames None) or one video of `frames`
    frames in one process (the memory model above)."""
    if frames is None:
        return SCENE_BYTES_PER_PIXEL * height * width
    panorama = height * (width + MAX_PAN * (frames - 1))
    return (
        PANORAMA_BYTES_PER_PIXEL * panorama
        + (FRAME_BYTES_PER_PIXEL * frames + COMPOSE_BYTES_PER_PIXEL) * height * width
        + META_BYTES_PER_FRAME * frames
    )


def _gb(nbytes):
    return f'{nbytes / 1e9:.3g} GB'


def render_sequence(rng, height=256, width=512, num_frames=30, max_memory_gb=MAX_MEMORY_GB):
    """A panning video: (frames uint8 [T, H, W, 3], labels uint8 [T, H, W], meta dict).

    Refuses (ValueError, before allocating) a video whose estimated peak memory
    (`task_bytes`) exceeds `max_memory_gb`."""
    _check_size(height, width)
    if num_frames < 1:
        raise ValueError(f'num_frames must be >= 1 (got {num_frames})')
    if task_bytes(height, width, num_frames) > max_memory_gb * 1e9:
        raise ValueError(
            f'max_memory_gb is {max_memory_gb:g}: a {height}x{width} video of {num_frames} '
            f'frames needs about {_gb(task_bytes(height, width, num_frames))}'
        )
    speed = int(rng.integers(1, 5)) * int(rng.choice([-1, 1]))  # pixels per frame, sign kept
    steps = [0] + [
        speed + int(rng.integers(-1, 2)) * (abs(speed) > 1) for _ in range(num_frames - 1)
    ]
    cum = np.cumsum(steps)
    cam_x = [int(c) for c in cum - cum.min()]
    pano = width + int(abs(cum[-1]))
    w = _build_world(rng, height, width, pano, pano / 2 + rng.uniform(-0.08, 0.08) * width)
    layers = _static_layers(rng, w)
    moving = _moving(w)
    frames, labels, tracks = [], [], {i: [] for i in moving}
    cam = w['cam']
    for t in range(num_frames):
        img, lbl, states, boxes = _compose(w, layers, cam_x[t], t)
        frames.append(img)
        labels.append(lbl)
        for i in moving:
            X, Z, _ = states[i]
            box = boxes[i]
            visible = (
                box is not None and box[0] < width and box[2] > 0 and box[1] < height and box[3] > 0
            )
            tracks[i].append(
                dict(
                    frame=t,
                    X=round(X, 4),
                    Z=round(Z, 4),
                    u=round(cam['xv'] + cam['f'] * X / Z - cam_x[t], 3) if Z > 0 else None,
                    v=round(cam['yh'] + cam['f'] * cam['hc'] / Z, 3) if Z > 0 else None,
                    bbox=box,
                    visible=bool(visible),
                )
            )
    objects = [
        dict(
            id=i,
            class_id=int(o['cls']),
            class_name=CLASS_NAMES[o['cls']],
            velocity=[round(v, 5) for v in o['vel']],
            track=tracks[i],
        )
        for i, o in ((i, w['objects'][i]) for i in moving)
    ]
    meta = dict(
        height=height,
        width=width,
        num_frames=num_frames,
        fps=FPS,
        panorama_width=pano,
        camera=dict(
            focal=round(cam['f'], 4),
            horizon=round(cam['yh'], 4),
            height_m=round(cam['hc'], 4),
            vanishing_x_panorama=round(cam['xv'], 4),
        ),
        camera_x=cam_x,
        camera_dx=[int(s) for s in steps],
        camera_forward_m=[0.0] * num_frames,
        hood_top=height if w['hood'] is None else w['hood']['top'],
        objects=objects,
        static_objects=[
            dict(
                id=i,
                class_id=int(o['cls']),
                class_name=CLASS_NAMES[o['cls']],
                X=round(o['X'], 4),
                Z=round(o['Z'], 4),
                bbox_panorama=_project(w, o, o['X'], o['Z'])[4],
            )
            for i, o in enumerate(w['objects'])
            if i not in moving
        ],
    )
    return np.stack(frames), np.stack(labels), meta


# ----------------------------------------------------------------------------- dataset files
KIND_CODES = {
    ('scene', 'train'): 0,
    ('scene', 'val'): 1,
    ('video', 'train'): 2,
    ('video', 'val'): 3,
}


def scene_paths(split, index):
    stem = f'{CITY}_{index:06d}_000019'
    return (
        f'leftImg8bit/{split}/{CITY}/{stem}_leftImg8bit.png',
        f'gtFine/{split}/{CITY}/{stem}_gtFine_labelTrainIds.png',
    )


def video_paths(split, seq, frame):
    stem = f'{CITY}_{seq:06d}_{frame:06d}'
    return (
        f'leftImg8bit_sequence/{split}/{CITY}/{stem}_leftImg8bit.png',
        f'gtFine_sequence/{split}/{CITY}/{stem}_gtFine_labelTrainIds.png',
    )


def _save(out_dir, rel_img, rel_lbl, img, lbl):
    Image.fromarray(img, 'RGB').save(os.path.join(out_dir, rel_img), compress_level=1)
    Image.fromarray(lbl, 'L').save(os.path.join(out_dir, rel_lbl), compress_level=1)


def _run_task(out_dir, kind, split, index, height, width, frames, seed):
    """Render and save one scene or one video; every sample has its own seeded stream."""
    rng = np.random.default_rng([seed, KIND_CODES[kind, split], index])
    if kind == 'scene':
        _save(out_dir, *scene_paths(split, index), *render_scene(rng, height, width))
        return [scene_paths(split, index)], None
    # generate() has checked the memory of the whole run against its own limit
    imgs, lbls, meta = render_sequence(rng, height, width, frames, max_memory_gb=math.inf)
    pairs = [video_paths(split, index, t) for t in range(frames)]
    for (ri, rl), img, lbl in zip(pairs, imgs, lbls):
        _save(out_dir, ri, rl, img, lbl)
    meta = dict(
        name=f'{CITY}_{index:06d}',
        split=split,
        sequence=index,
        images=[p[0] for p in pairs],
        labels=[p[1] for p in pairs],
        **meta,
    )
    return pairs, meta


@dataclasses.dataclass(frozen=True)
class Run:
    """What one run writes (the command line's flags of the same names) and its limits."""

    num_train: int = 200
    num_val: int = 50
    height: int = 256
    width: int = 512
    num_videos_train: int = 8
    num_videos_val: int = 4
    video_frames: int = 30
    seed: int = 0
    num_workers: int | None = None
    max_memory_gb: float = MAX_MEMORY_GB
    max_megapixels: float = MAX_MEGAPIXELS


def validate_config(run):
    """Check a run before anything is allocated; return the number of worker processes to use.

    Raises ValueError (message starting with the flag at fault) for bad values, for a run that
    writes more than `max_megapixels` megapixels, and for one whose estimated peak memory
    (bookkeeping in the main process + each worker's largest task, `task_bytes`) exceeds
    `max_memory_gb` with `num_workers` workers (None: as many as fit, at most min(CPUs, 4),
    and 1 for runs under 60 images).
    """
    num_train, num_val, height, width = run.num_train, run.num_val, run.height, run.width
    num_videos_train, num_videos_val = run.num_videos_train, run.num_videos_val
    video_frames, num_workers = run.video_frames, run.num_workers
    max_memory_gb, max_megapixels = run.max_memory_gb, run.max_megapixels
    _check_size(height, width)
    for name, v in (
        ('num_train', num_train),
        ('num_val', num_val),
        ('num_videos_train', num_videos_train),
        ('num_videos_val', num_videos_val),
        ('seed', run.seed),
    ):
        if v < 0:
            raise ValueError(f'{name} must be >= 0 (got {v})')
    videos, scenes = num_videos_train + num_videos_val, num_train + num_val
    if video_frames < 2 and videos > 0:
        raise ValueError(f'video_frames must be >= 2 (got {video_frames})')
    for name, v in (('max_memory_gb', max_memory_gb), ('max_megapixels', max_megapixels)):
        if not v > 0:
            raise ValueError(f'{name} must be > 0 (got {v})')
    if num_workers is not None and num_workers < 1:
        raise ValueError(f'num_workers must be >= 1 (got {num_workers})')
    frames = videos * video_frames if videos else 0
    megapixels = (scenes + frames) * height * width / 1e6
    if megapixels > max_megapixels:
        raise ValueError(
            f'max_megapixels is {max_megapixels:g}: {scenes} scenes and {frames} video frames '
            f'of {height}x{width} are {megapixels:.6g} megapixels (raise --max_megapixels or '
            'ask for fewer or smaller images)'
        )
    budget = max_memory_gb * 1e9
    main = META_BYTES_PER_SCENE * scenes + META_BYTES_PER_FRAME * frames
    task = max(
        task_bytes(height, width) if scenes else 0,
        task_bytes(height, width, video_frames) if videos else 0,
    )
    what = (
        f'one {height}x{width} video of {video_frames} frames'
        if videos and task == task_bytes(height, width, video_frames)
        else f'one {height}x{width} scene'
    )
    if main + task > budget:
        lower = '--height/--width' + ('/--video_frames' if videos else '')
        need = (
            f'the lists and tracks of {scenes + frames} images need about {_gb(main)} besides '
            f'{_gb(task)} for {what}'
            if main > task
            else f'{what} needs about {_gb(task)}'
        )
        raise ValueError(
            f'max_memory_gb is {max_memory_gb:g}: {need} (raise --max_memory_gb, or lower '
            f'{lower} or the number of images)'
        )
    fit = int((budget - main) // (task + WORKER_BYTES))
    if num_workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
        return 1 if scenes + frames < 60 else max(1, min(cpus or 1, 4, fit))
    if num_workers > 1 and num_workers > fit:
        raise ValueError(
            f'max_memory_gb is {max_memory_gb:g}: {num_workers} workers rendering {what} '
            f'(about {_gb(task)} each) need about {_gb(main + num_workers * (task + WORKER_BYTES))}'
            f'; at most {max(fit, 1)} fit (lower --num_workers or raise --max_memory_gb)'
        )
    return num_workers


def generate(out_dir, progress=False, **run):
    """Write the whole dataset under out_dir; return a dict of the list paths, the run's
    fields, `num_images` and `seconds`.

    `run`: the fields of `Run` (sizes, counts, seed, workers, limits). The run is checked first
    (`validate_config`); nothing is allocated or written if it does not pass."""
    run = Run(**run)
    num_workers = validate_config(run)
    num_train, num_val, height, width = run.num_train, run.num_val, run.height, run.width
    num_videos_train, num_videos_val = run.num_videos_train, run.num_videos_val
    video_frames = run.video_frames
    start = time.time()
    tasks = (
        [('video', 'train', i) for i in range(num_videos_train)]
        + [('video', 'val', i) for i in range(num_videos_val)]
        + [('scene', 'train', i) for i in range(num_train)]
        + [('scene', 'val', i) for i in range(num_val)]
    )
    for sub in ('leftImg8bit', 'gtFine', 'leftImg8bit_sequence', 'gtFine_sequence'):
        for split in ('train', 'val'):
            os.makedirs(os.path.join(out_dir, sub, split, CITY), exist_ok=True)
    os.makedirs(os.path.join(out_dir, 'list'), exist_ok=True)
    total = num_train + num_val + (num_videos_train + num_videos_val) * video_frames
    results, done = {}, 0
    args = (height, width, video_frames, run.seed)

    def record(task, result):
        nonlocal done
        before, done = done, done + len(result[0])
        results[task] = result
        if progress and (20 * before // total != 20 * done // total or done == total):  # 5 % steps
            bar = '#' * (30 * done // total)
            elapsed = time.time() - start
            rate = done / max(elapsed, 1e-9)
            eta = int((total - done) / max(rate, 1e-9))
            end = '\r' if sys.stderr.isatty() else '\n'  # a file or pipe gets whole lines
            sys.stderr.write(
                f'[{bar:<30}] {done}/{total} images {rate:.1f} images/s ETA '
                f'{eta // 60:02d}:{eta % 60:02d}{end}'
            )
            sys.stderr.flush()

    if num_workers <= 1:
        for task in tasks:
            record(task, _run_task(out_dir, *task, *args))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(num_workers, mp_context=mp.get_context('spawn')) as pool:
            futures = {pool.submit(_run_task, out_dir, *task, *args): task for task in tasks}
            for fut in cf.as_completed(futures):
                record(futures[fut], fut.result())
    if progress and total and sys.stderr.isatty():
        sys.stderr.write('\n')
    out = dict(out_dir=out_dir)
    for name, kind, split in (
        ('train', 'scene', 'train'),
        ('val', 'scene', 'val'),
        ('video_train', 'video', 'train'),
        ('video_val', 'video', 'val'),
    ):
        path = os.path.join(out_dir, 'list', f'{name}.txt')
        keys = sorted(k for k in results if k[:2] == (kind, split))
        with open(path, 'w') as fh:
            fh.writelines(f'{img} {lbl}\n' for k in keys for img, lbl in results[k][0])
        out[f'{name}_list'] = path
    videos = [results[k][1] for k in tasks if k[0] == 'video']
    out['videos_json'] = os.path.join(out_dir, 'videos.json')
    with open(out['videos_json'], 'w') as fh:
        json.dump(dict(fps=FPS, class_names=CLASS_NAMES, sequences=videos), fh, indent=1)
    out.update(dataclasses.asdict(run), num_images=total, seconds=time.time() - start)
    return out


# ----------------------------------------------------------------------------- command line
def _fail(message):
    """The one-line error of every tool of the project, and exit status 1."""
    sys.stderr.write(f'error: {message}\n')
    sys.exit(1)


def _main():
    from absl import app, flags

    flags.DEFINE_string('out_dir', None, 'Output directory (created if missing).')
    flags.DEFINE_integer('num_train', 200, 'Number of training scenes.')
    flags.DEFINE_integer('num_val', 50, 'Number of validation scenes.')
    flags.DEFINE_integer('height', 256, 'Image height in pixels.')
    flags.DEFINE_integer('width', 512, 'Image width in pixels.')
    flags.DEFINE_integer('num_videos_train', 8, 'Number of training video sequences.')
    flags.DEFINE_integer('num_videos_val', 4, 'Number of validation video sequences.')
    flags.DEFINE_integer('video_frames', 30, 'Frames per video sequence.')
    flags.DEFINE_integer('seed', 0, 'Random seed; same seed -> identical files.')
    flags.DEFINE_integer('num_workers', 0, 'Worker processes (0 = automatic).')
    flags.DEFINE_float(
        'max_memory_gb',
        MAX_MEMORY_GB,
        'Refuse a run whose estimated peak memory exceeds this many GB (1e9 bytes); the '
        'automatic worker count is lowered to fit.',
    )
    flags.DEFINE_float(
        'max_megapixels', MAX_MEGAPIXELS, 'Refuse a run that writes more megapixels than this.'
    )
    flags.DEFINE_bool(
        'overwrite', False, 'Write into an --out_dir that is not empty (its files may be replaced).'
    )
    F = flags.FLAGS

    def parse(argv):
        try:
            rest = F(argv)
        except flags.Error as e:
            _fail(str(e).splitlines()[0])
        if len(rest) > 1:
            _fail(f'unexpected arguments: {" ".join(rest[1:])}')
        return rest

    def main(_):
        if not F.out_dir:
            _fail('--out_dir is required')
        if F.num_workers < 0:
            _fail(f'--num_workers must be >= 0 (got {F.num_workers})')
        run = {f.name: F[f.name].value for f in dataclasses.fields(Run)}
        try:
            run['num_workers'] = validate_config(
                Run(**dict(run, num_workers=F.num_workers or None))
            )
        except ValueError as e:
            _fail(f'--{e}')
        if os.path.exists(F.out_dir) and not os.path.isdir(F.out_dir):
            _fail(f'{F.out_dir}: exists and is not a directory')
        if os.path.isdir(F.out_dir) and os.listdir(F.out_dir) and not F.overwrite:
            _fail(
                f'{F.out_dir}: exists and is not empty (its lists, videos.json and images would '
                'be replaced): choose a new --out_dir or pass --overwrite'
            )
        try:
            res = generate(F.out_dir, progress=True, **run)
        except OSError as e:
            _fail(f'{e.filename or F.out_dir}: {e.strerror or e}')
        except MemoryError:
            _fail(
                'out of memory while rendering; set --max_memory_gb to the memory this machine '
                'has free (the run is then checked against it) or lower --height/--width'
            )
        print(
            f'toycity: wrote {res["num_train"]} train + {res["num_val"]} val scenes and '
            f'{res["num_videos_train"]} + {res["num_videos_val"]} videos x '
            f'{res["video_frames"]} frames ({res["num_images"]} images, {F.height}x{F.width}) '
            f'to {F.out_dir} in {res["seconds"]:.1f}s'
        )

    app.run(main, flags_parser=parse)


if __name__ == '__main__':
    _main()
