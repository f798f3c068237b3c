"""Per-frame camera degradations that make per-frame predictions flicker.

All parameters are drawn once per clip from its own generator, as smooth or random sequences over
the frames: exposure and white-balance drift, vignetting, moving cloud shadows, motion blur
along the image motion, signal-dependent sensor noise and JPEG compression artefacts.
"""

from __future__ import annotations

import cv2
import numpy as np

from vidseg.data.synth.noise import smoothstep, value_noise

_CLOUD_STEP = 8  # world pixels per cloud-raster pixel


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """A stationary AR(1) sequence with coefficient ``phi`` and marginal std ``sigma``."""
    out = np.empty(n)
    out[0] = rng.normal(0, sigma)
    innov = sigma * np.sqrt(1 - phi**2)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + rng.normal(0, innov)
    return out


class Degrader:
    """Turns clean renders into camera frames; ``strength`` 0 leaves them clean."""

    def __init__(
        self,
        frames: int,
        size: tuple[int, int],
        world_shape: tuple[int, int],
        ppm: float,
        fps: float,
        rng: np.random.Generator,
        strength: float = 1.0,
    ) -> None:
        self.h, self.w = size
        self.strength = strength
        self.rng = rng
        s = strength
        # Auto-exposure hunts slowly and sometimes jumps; white balance drifts per channel.
        jumps = np.cumsum(
            np.where(rng.random(frames) < 0.04 * s, rng.normal(0, 0.12 * s, frames), 0.0)
        )
        self.gain = np.exp(_ar1(rng, frames, 0.9, 0.06 * s) + jumps - jumps.mean())
        self.white = np.exp(np.stack([_ar1(rng, frames, 0.95, 0.03 * s) for _ in range(3)], axis=1))
        self.noise_sigma = rng.uniform(0.004, 0.02, frames) * s
        self.blur = rng.random(frames) < 0.25 * min(s, 2)
        self.blur_extra = rng.uniform(1.0, 4.0, frames) * s
        self.jpeg = np.where(
            rng.random(frames) < min(0.8 * s, 1),
            np.clip(100 - rng.uniform(5, 65, frames) * s, 15, 98),
            0,
        ).astype(int)
        yy, xx = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)
        r2 = ((xx - (self.w - 1) / 2) ** 2 + (yy - (self.h - 1) / 2) ** 2) / (
            (self.w / 2) ** 2 + (self.h / 2) ** 2
        )
        self.vignette = (1 - rng.uniform(0.0, 0.3) * s * r2).astype(np.float32)[..., None]
        # Clouds drift with the wind over the world; their shadows move across the scene.
        self.clouds = rng.random() < 0.6 and s > 0
        wind_speed = rng.uniform(5, 15) * ppm / fps  # cloud speed in m/s -> world px per frame
        wind_dir = rng.uniform(0, 2 * np.pi)
        self.wind = wind_speed * np.array([np.cos(wind_dir), np.sin(wind_dir)])
        drift = int(np.ceil(np.abs(self.wind).max() * frames / _CLOUD_STEP)) + 2
        ch = world_shape[0] // _CLOUD_STEP + 2 * drift + 2
        cw = world_shape[1] // _CLOUD_STEP + 2 * drift + 2
        self.cloud_origin = np.array([drift, drift], np.float64)
        self.cloud_field = value_noise((ch, cw), rng.uniform(8, 20), rng)
        self.cloud_cover = rng.uniform(-0.5, 0.8)
        self.cloud_dark = rng.uniform(0.25, 0.5) * min(s, 1.5)

    def apply(
        self, n: int, rgb: np.ndarray, world_to_image: np.ndarray, image_motion: np.ndarray
    ) -> np.ndarray:
        """Degrade the clean frame ``rgb`` (h, w, 3) float32 in [0, 1]; returns uint8 RGB.

        ``image_motion`` is the displacement (dx, dy) in pixels of the image centre since the
        previous frame; motion blur smears along it.
        """
        if self.strength == 0:
            return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
        img = rgb
        if self.clouds:
            img = img * self._cloud_shadow(n, world_to_image)[..., None]
        img = img * (self.gain[n] * self.white[n]).astype(np.float32) * self.vignette
        if self.blur[n]:
            img = self._motion_blur(img, image_motion, self.blur_extra[n])
        # OpenCV's generator is several times faster than NumPy's here; it is seeded from the
        # clip's generator every frame, so the output stays a function of the seed alone.
        cv2.setRNGSeed(int(self.rng.integers(0, 2**31 - 1)))
        noise = np.empty(img.shape, np.float32)
        cv2.randn(noise, 0.0, 1.0)
        img = img + noise * (self.noise_sigma[n] * np.sqrt(0.3 + np.clip(img, 0, 1)))
        out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
        if self.jpeg[n]:
            _ok, buf = cv2.imencode(
                ".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg[n])]
            )
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        return np.ascontiguousarray(out)

    def _cloud_shadow(self, n: int, world_to_image: np.ndarray) -> np.ndarray:
        # cloud raster (u, v) -> world: step * (u, v) - step * origin + wind * n -> image
        step = _CLOUD_STEP
        offset = -step * self.cloud_origin + self.wind * n
        raster_to_world = np.array([[step, 0, offset[0]], [0, step, offset[1]], [0, 0, 1]])
        field = cv2.warpPerspective(
            self.cloud_field,
            world_to_image @ raster_to_world,
            (self.w, self.h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        return 1 - self.cloud_dark * smoothstep(field, self.cloud_cover, self.cloud_cover + 0.8)

    @staticmethod
    def _motion_blur(img: np.ndarray, motion: np.ndarray, extra: float) -> np.ndarray:
        length = float(np.hypot(*motion)) * 0.5 + extra
        if length < 1.5:
            return img
        k = int(np.ceil(length)) | 1
        kernel = np.zeros((k, k), np.float32)
        angle = np.arctan2(motion[1], motion[0]) if np.hypot(*motion) > 1e-6 else 0.0
        c = (k - 1) / 2
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        cv2.line(
            kernel,
            (round((c - dx) * 16), round((c - dy) * 16)),
            (round((c + dx) * 16), round((c + dy) * 16)),
            1.0,
            1,
            cv2.LINE_AA,
            4,
        )
        # An anti-aliased line is not point-symmetric about its centre; averaging it with its
        # 180-degree rotation centres the kernel exactly, so blur never shifts the content
        # against the ground-truth geometry.
        kernel = 0.5 * (kernel + kernel[::-1, ::-1])
        kernel /= max(kernel.sum(), 1e-6)
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
