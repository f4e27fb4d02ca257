"""Classical segmentation methods as models: thresholds, clustering, edges, region growing, watershed, random walker,
graph cuts, active contours and superpixels, each a registered ``model.name`` beside the networks.

A method is an ``nn.Module`` without trainable weights. Its ``forward`` takes the preprocessed batch the networks get
(``(B, C, *spatial)``, after medseg's resizing and intensity normalisation) and returns one logit map per image, so
validation, ``infer`` (sliding windows, flips, ensembles, resampling to the input's grid, clean-up), ``evaluate``,
``cv`` and reports use it unchanged. What differs is training: instead of gradient steps, ``medseg train``
searches each method's few parameters (:meth:`ClassicalMethod.candidates`) for the highest mean Dice on the training
images (:func:`medseg.engine.fitting.fit_classical`), and the chosen values travel in the checkpoint's model spec as
``fitted`` (plain numbers and lists), so the checkpoint alone rebuilds the fitted method.

Two things are learnt from the training pixels before the search, because every method needs them:

- **a colour projection**: Fisher's linear discriminant of lesion against background pixels over the input channels
  (for one channel, just its sign), oriented so that foreground projects higher. ``channel: projection`` thresholds
  on it, and the expensive methods work on it alone;
- **a superpixel classifier** (SLIC, Felzenszwalb and normalised-cut regions): a logistic regression on each region's
  mean and spread per channel and its distance from the image centre, fitted on the training images' regions.

The methods come from scikit-image, scikit-learn and PyMaxflow; medseg adds the search, the shared markers and the
colour models. Hard masks are given logits of +-8 (probability 0.9997), soft ones (Gaussian mixtures, the random
walker, the classifiers) their probabilities.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import torch
from torch import nn

HARD_LOGIT = 8.0
SMALL = 1e-6
MEMO_BYTES = 1 << 30  # what a search remembers at most; beyond it, steps are recomputed (large volumes)


def _as_logits(prob: np.ndarray) -> np.ndarray:
    p = np.clip(prob.astype(np.float64), 1 / (1 + np.exp(HARD_LOGIT)), 1 / (1 + np.exp(-HARD_LOGIT)))
    return np.log(p / (1 - p)).astype(np.float32)


class ClassicalMethod(nn.Module):
    """The shared machinery: ``segment(image, params)`` maps one preprocessed image ``(C, *spatial)`` to a
    foreground probability ``(*spatial)`` in [0, 1]; ``grid(in_channels)`` lists the parameters the fit searches;
    ``learn(images, masks, params)`` fits what a candidate learns from pixels (a classifier); ``dims`` are the
    spatial dimensions it works in. :meth:`predict` is what callers use: ``segment`` at the method's working size.
    """

    fits_by_search = True
    whole_input = True  # the predictor passes the whole preprocessed image, not sliding windows of it
    dims: tuple[int, ...] = (2, 3)
    expensive = False  # works on the colour projection only, so the search stays within minutes
    # >0: the method works on the image shrunk until its longest side is at most this many pixels, and its
    # probabilities are resized back; the iterative methods, whose cost grows with the pixels (and the active
    # contours' steps with the width), at a quarter of the pixels of a 192x256 image
    work_size = 0

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        fitted=None,
        work_size: int | None = None,
        **_net,
    ):
        super().__init__()
        self.spatial_dims, self.in_channels = int(spatial_dims), int(in_channels)
        self.fitted = dict(fitted or {})
        if work_size is not None:  # model.extra.work_size: 0 works at the preprocessed size
            self.work_size = int(work_size)
        self._memo: dict | None = None  # during a search: what several candidates share, per image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().float().cpu().numpy()
        probs = np.stack([self.predict(img, self.fitted) for img in images])[:, None]
        return torch.from_numpy(_as_logits(probs)).to(x.device)

    def predict(self, image: np.ndarray, params: dict) -> np.ndarray:
        """:meth:`segment` on ``image`` shrunk to ``params["work_size"]`` (the fitted value), resized back."""
        size = int(params.get("work_size", 0))
        small = self.memo("shrink", image, (size,), lambda: shrink(image, size))  # the memo keeps it alive
        prob = self.segment(small, params)
        return prob if small is image else resize_to(prob, image.shape[1:])

    def search_setup(self) -> dict:
        """The settings every candidate shares (the working size), and a memo for what they compute alike."""
        self._memo, self._memo_bytes = {}, 0
        return {"work_size": self.work_size} if self.work_size else {}

    def search_done(self) -> None:
        self._memo = None

    def memo(self, step: str, of: np.ndarray, key: tuple, compute):
        """``compute()``, step ``step`` of array ``of`` with settings ``key``, remembered during a search. The entry
        holds ``of`` itself, so the ``id`` it is found by cannot pass to another array while it is kept; past
        :data:`MEMO_BYTES` nothing new is kept and steps are recomputed."""
        if self._memo is None:
            return compute()
        full = (step, id(of), *key)
        if full in self._memo:
            return self._memo[full][1]
        value = compute()
        size = _nbytes(value)
        if self._memo_bytes + size <= MEMO_BYTES:
            self._memo[full] = (of, value)
            self._memo_bytes += size
        return value

    def grey(self, image: np.ndarray, params: dict) -> np.ndarray:
        """:func:`grey`, remembered during a search (every candidate of a method shares a few)."""
        key = tuple(str(params.get(k)) for k in ("channel", "polarity", "sigma", "projection"))
        return self.memo("grey", image, key, lambda: grey(image, params))

    # --- what a method defines ---

    def segment(self, image: np.ndarray, params: dict) -> np.ndarray:
        raise NotImplementedError

    def grid(self, in_channels: int) -> dict[str, list]:
        return {}

    def learn(self, images: list[np.ndarray], masks: list[np.ndarray], params: dict) -> dict:
        return {}

    # --- the search space ---

    def candidates(self, in_channels: int) -> list[dict]:
        grid = self.grid(in_channels)
        keys = list(grid)
        points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
        return [p for p in points if self.valid(p)] or [{}]

    def valid(self, params: dict) -> bool:
        return True


def channel_options(in_channels: int, expensive: bool = False) -> list:
    """The grey levels a threshold may use: the learnt projection, and for colour images each channel and their mean."""
    if expensive or in_channels == 1:
        return ["projection"]
    return ["projection", "grey", *range(in_channels)]


def fisher_projection(images: list[np.ndarray], masks: list[np.ndarray], max_pixels: int = 200_000) -> list[float]:
    """Fisher's discriminant direction of foreground against background pixels over the channels, scaled to unit
    length and signed so that foreground projects higher; ``[1.0]`` when a class is missing."""
    pixels = np.concatenate([im.reshape(im.shape[0], -1).T for im in images])
    labels = np.concatenate([m.reshape(-1) > 0 for m in masks])
    if labels.all() or not labels.any():
        return [1.0] * images[0].shape[0]
    step = max(1, len(labels) // max_pixels)
    pixels, labels = pixels[::step].astype(np.float64), labels[::step]
    fg, bg = pixels[labels], pixels[~labels]
    within = np.atleast_2d(np.cov(fg.T)) + np.atleast_2d(np.cov(bg.T))
    w = np.linalg.solve(within + SMALL * np.eye(len(within)), fg.mean(0) - bg.mean(0))
    return (w / (np.linalg.norm(w) + SMALL)).tolist()


def grey(image: np.ndarray, params: dict) -> np.ndarray:
    """The one grey-level image a method works on (see :func:`channel_options`), smoothed by ``sigma``."""
    from scipy.ndimage import gaussian_filter

    channel = params.get("channel", "projection")
    if channel == "projection":
        weights = np.asarray(params.get("projection") or [1.0] * image.shape[0], np.float32)
        out = np.tensordot(weights, image, axes=1)
    elif channel == "grey":
        out = image.mean(0)
    else:
        out = image[int(channel)]
    out = out.astype(np.float32)
    if params.get("polarity", "brighter") == "darker":
        out = -out
    sigma = float(params.get("sigma", 0))
    return gaussian_filter(out, sigma) if sigma > 0 else out


def _nbytes(value) -> int:
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


def shrink(image: np.ndarray, longest: int) -> np.ndarray:
    """``image`` ``(C, *spatial)`` area-averaged down until its longest side is at most ``longest`` pixels (itself
    when it already is, or when ``longest`` is 0)."""
    spatial = image.shape[1:]
    if longest <= 0 or max(spatial) <= longest:
        return image
    from skimage.transform import resize

    factor = longest / max(spatial)
    size = tuple(max(2, round(s * factor)) for s in spatial)
    return np.stack([resize(ch, size, order=1, anti_aliasing=True, preserve_range=True) for ch in image]).astype(
        np.float32
    )


def resize_to(prob: np.ndarray, shape: tuple) -> np.ndarray:
    """A probability map resized (linearly) to ``shape``."""
    from skimage.transform import resize

    return np.clip(resize(prob.astype(np.float32), shape, order=1, preserve_range=True), 0, 1).astype(np.float32)


def _flat(img: np.ndarray) -> bool:
    return float(img.max() - img.min()) < 1e-6


def otsu_mask(g: np.ndarray) -> np.ndarray:
    """Foreground above Otsu's threshold (nothing on a flat image)."""
    from skimage.filters import threshold_otsu

    return np.zeros(g.shape, bool) if _flat(g) else g > threshold_otsu(g)


def markers(g: np.ndarray, margin: float) -> np.ndarray:
    """Seeds for watershed and the random walker: 2 (foreground) and 1 (background) where ``g`` lies on either side
    of Otsu's threshold by at least ``margin`` of the way to that side's mean (0: every pixel seeded, 1: only those
    beyond the class means), 0 undecided."""
    out = np.ones(g.shape, np.int32)
    fg = otsu_mask(g)
    if not fg.any() or fg.all():
        return out if not fg.any() else out * 2
    t = float(g[~fg].max())  # the threshold as it falls between the two classes' values
    mean_fg, mean_bg = float(g[fg].mean()), float(g[~fg].mean())
    out[...] = 0
    out[g >= t + margin * (mean_fg - t)] = 2
    out[(g <= t - margin * (t - mean_bg)) & ~fg] = 1
    out[fg & (out == 1)] = 0
    if not (out == 2).any():
        out[np.unravel_index(int(np.argmax(g)), g.shape)] = 2
    if not (out == 1).any():
        out[np.unravel_index(int(np.argmin(g)), g.shape)] = 1
    return out


# --- thresholds ---


class Otsu(ClassicalMethod):
    """Otsu's threshold on one channel, their mean, or the learnt colour projection."""

    def grid(self, in_channels):
        return {"channel": channel_options(in_channels), "polarity": ["brighter", "darker"], "sigma": [0, 1, 2]}

    def segment(self, image, params):
        return otsu_mask(self.grey(image, params)).astype(np.float32)


class MultiOtsu(ClassicalMethod):
    """Multi-level Otsu: the image in ``classes`` intensity classes, the ``n_fg`` brightest of them foreground."""

    def grid(self, in_channels):
        return {
            "channel": channel_options(in_channels),
            "polarity": ["brighter", "darker"],
            "classes": [3, 4],
            "n_fg": [1, 2],
            "sigma": [1],
        }

    def valid(self, params):
        return params["n_fg"] < params["classes"]

    def segment(self, image, params):
        g = self.grey(image, params)
        classes = int(params.get("classes", 3))
        # the same classes for each number of them called foreground
        regions = self.memo("multiotsu", g, (classes,), lambda: _multiotsu_classes(g, classes))
        if regions is None:  # too few grey levels for that many classes
            return np.zeros(g.shape, np.float32)
        return (regions >= int(params.get("classes", 3)) - int(params.get("n_fg", 1))).astype(np.float32)


def _multiotsu_classes(g: np.ndarray, classes: int) -> np.ndarray | None:
    from skimage.filters import threshold_multiotsu

    try:
        return np.digitize(g, threshold_multiotsu(g, classes=classes))
    except ValueError:
        return None


class Adaptive(ClassicalMethod):
    """A local threshold: each pixel against the Gaussian-weighted mean of a block around it, minus an offset."""

    def grid(self, in_channels):
        return {
            "channel": channel_options(in_channels)[:2],  # the projection and the mean: a local mean is slow
            "polarity": ["brighter", "darker"],
            "block": [0.25, 0.5, 1.0],
            "offset": [-0.5, -0.25, 0.0],  # standard deviations; negative: above the local mean by that much
            "sigma": [1],
        }

    def segment(self, image, params):
        from skimage.filters import threshold_local

        g = self.grey(image, params)
        if _flat(g):
            return np.zeros(g.shape, np.float32)
        block = max(3, int(min(g.shape) * float(params.get("block", 0.25))) | 1)
        offset = float(params.get("offset", 0.0)) * float(g.std())
        return (g > threshold_local(g, block, method="gaussian", offset=offset)).astype(np.float32)


# --- region growing and edges ---


class RegionGrowing(ClassicalMethod):
    """Flood fill from a seed (the image centre, or its brightest point after smoothing) over the connected pixels
    whose value is within ``tolerance`` times the seed's distance from Otsu's threshold (1: down to the threshold),
    on both sides of the seed's value (``band: two_sided``, which also stops at what is much brighter, such as a
    glare) or below it only (``one_sided``)."""

    def grid(self, in_channels):
        return {
            "channel": channel_options(in_channels, expensive=True),
            "seed": ["centre", "extreme"],
            "tolerance": [0.5, 0.75, 1.0, 1.25],
            "band": ["two_sided", "one_sided"],
            "sigma": [0, 2],
        }

    def segment(self, image, params):
        from skimage.segmentation import flood

        g = self.grey(image, params)
        if _flat(g):
            return np.zeros(g.shape, np.float32)
        if params.get("seed", "centre") == "centre":
            seed = tuple(s // 2 for s in g.shape)
        else:
            seed = np.unravel_index(int(np.argmax(g)), g.shape)
        from skimage.filters import threshold_otsu

        seed = tuple(int(s) for s in seed)
        tol = float(params.get("tolerance", 1.0)) * abs(float(g[seed]) - float(threshold_otsu(g)))
        if params.get("band", "two_sided") == "one_sided":  # pixels brighter than the seed belong to it too
            g = np.minimum(g, g[seed])
        return flood(g, seed, tolerance=tol).astype(np.float32)


class Edges(ClassicalMethod):
    """Canny edges, closed by a disk of ``radius`` pixels, with the regions they enclose filled (2D)."""

    dims = (2,)

    def grid(self, in_channels):
        return {"channel": channel_options(in_channels), "sigma": [1, 2, 3], "radius": [2, 4, 8]}

    def segment(self, image, params):
        from scipy.ndimage import binary_closing, binary_fill_holes
        from skimage.feature import canny
        from skimage.morphology import disk

        g = self.grey(image, {**params, "sigma": 0})  # canny smooths by its own sigma
        if _flat(g):
            return np.zeros(g.shape, np.float32)
        sigma = float(params.get("sigma", 2))
        edges = self.memo("canny", g, (sigma,), lambda: canny(g, sigma=sigma))  # shared by each closing radius
        radius = int(params.get("radius", 4))
        closed = binary_closing(np.pad(edges, radius), disk(radius))[(slice(radius, -radius),) * 2]
        return binary_fill_holes(closed).astype(np.float32)


# --- clustering ---


def _pixel_sample(pixels: np.ndarray, n: int = 4000) -> np.ndarray:
    step = max(1, len(pixels) // n)
    return pixels[::step]


class _Clusters(ClassicalMethod):
    """Per image, cluster the pixels' channel values into ``k`` groups; the ``n_fg`` groups whose centres project
    highest on the colour projection are foreground."""

    def grid(self, in_channels):
        return {"k": [2, 3, 4], "n_fg": [1, 2]}

    def valid(self, params):
        return params["n_fg"] < params["k"]

    def cluster_probabilities(self, pixels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def segment(self, image, params):
        pixels = image.reshape(image.shape[0], -1).T.astype(np.float64)
        if _flat(pixels):
            return np.zeros(image.shape[1:], np.float32)
        k = int(params.get("k", 2))
        # one clustering per image and k, whichever of its clusters are then called foreground
        probs, centres = self.memo("clusters", image, (k,), lambda: self.cluster_probabilities(pixels, k))
        weights = np.asarray(params.get("projection") or [1.0] * image.shape[0])
        order = np.argsort(centres @ weights)[::-1]
        fg = probs[:, order[: int(params.get("n_fg", 1))]].sum(1)
        return fg.reshape(image.shape[1:]).astype(np.float32)


class KMeansClusters(_Clusters):
    """K-means clustering of the pixels' colours or intensities."""

    def cluster_probabilities(self, pixels, k):
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(_pixel_sample(pixels))
        hard = np.eye(k)[km.predict(pixels)]
        return hard, km.cluster_centers_


class GaussianMixtureClusters(_Clusters):
    """A Gaussian mixture of the pixels' colours or intensities; the foreground probability is the posterior of the
    foreground components."""

    def cluster_probabilities(self, pixels, k):
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(n_components=k, covariance_type="full", random_state=0, reg_covar=1e-4)
        gm.fit(_pixel_sample(pixels))
        return gm.predict_proba(pixels), gm.means_


# --- watershed, random walker, graph cut ---


class Watershed(ClassicalMethod):
    """Marker-controlled watershed on the gradient: seeds from :func:`markers`, flooded over the Sobel gradient."""

    def grid(self, in_channels):
        return {"channel": channel_options(in_channels), "margin": [0.25, 0.5, 1.0], "sigma": [1, 2]}

    def segment(self, image, params):
        from skimage.filters import sobel
        from skimage.segmentation import watershed

        g = self.grey(image, params)
        gradient = self.memo("sobel", g, (), lambda: sobel(g))  # shared by each marker margin
        labels = watershed(gradient, markers(g, float(params.get("margin", 0.5))))
        return (labels == 2).astype(np.float32)


class RandomWalker(ClassicalMethod):
    """The random walker (Grady 2006) from the :func:`markers` seeds: each pixel's probability of reaching a
    foreground seed first."""

    expensive = True
    work_size = 128

    def grid(self, in_channels):
        return {"channel": ["projection"], "margin": [0.5, 1.0], "beta": [50, 250], "sigma": [1]}

    def segment(self, image, params):
        from skimage.segmentation import random_walker

        g = self.grey(image, params)
        seeds = markers(g, float(params.get("margin", 0.5)))
        if (seeds > 0).all():
            return (seeds == 2).astype(np.float32)
        scaled = (g - g.mean()) / (g.std() + SMALL)
        beta = float(params.get("beta", 130))
        with warnings.catch_warnings():  # the solver's tolerance makes probabilities a hair outside [0, 1]; clipped
            warnings.simplefilter("ignore", UserWarning)
            probs = random_walker(scaled, seeds, beta=beta, mode="cg_j", return_full_prob=True)
        return np.clip(probs[1], 0, 1).astype(np.float32)


class GraphCut(ClassicalMethod):
    """A graph cut in the style of GrabCut (Rother et al. 2004): Gaussian-mixture colour models of foreground and
    background, started from Otsu's mask on the projection and refitted ``rounds`` times, with a contrast-sensitive
    smoothness term of weight ``smooth`` (PyMaxflow's max-flow on the pixel grid)."""

    expensive = True
    work_size = 128

    def grid(self, in_channels):
        return {"smooth": [2.0, 8.0], "rounds": [2]}

    def segment(self, image, params):
        import maxflow
        from skimage.filters import sobel

        g = self.grey(image, {**params, "sigma": 1})
        mask = self.memo("otsu", g, (), lambda: otsu_mask(g))
        if mask.all() or not mask.any():
            return mask.astype(np.float32)
        pixels = image.reshape(image.shape[0], -1).T.astype(np.float64)
        grad = sobel(g)
        contrast = np.exp(-(grad**2) / (2 * float(np.mean(grad**2)) + SMALL))
        for _ in range(int(params.get("rounds", 1))):
            cost_fg, cost_bg = (_colour_cost(pixels, m.reshape(-1)).reshape(g.shape) for m in (mask, ~mask))
            floor = np.minimum(cost_fg, cost_bg)  # only the difference matters; capacities must not be negative
            cost_fg, cost_bg = cost_fg - floor, cost_bg - floor
            graph = maxflow.Graph[float]()
            nodes = graph.add_grid_nodes(g.shape)
            graph.add_grid_edges(nodes, weights=float(params.get("smooth", 4.0)) * contrast, symmetric=True)
            graph.add_grid_tedges(nodes, cost_fg, cost_bg)  # a node on the sink side pays its foreground cost
            graph.maxflow()
            new = graph.get_grid_segments(nodes)
            if new.all() or not new.any() or (new == mask).all():
                break
            mask = new
        return mask.astype(np.float32)


def _colour_cost(pixels: np.ndarray, member: np.ndarray, components: int = 3) -> np.ndarray:
    """Minus the log-likelihood of every pixel under a Gaussian mixture fitted to the ``member`` pixels."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    chosen = _pixel_sample(pixels[member], 3000)
    gm = GaussianMixture(n_components=min(components, len(chosen)), random_state=0, reg_covar=1e-3, max_iter=30)
    with warnings.catch_warnings():  # 30 EM steps are plenty for a colour model; not converging further is fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(chosen)
    return -gm.score_samples(pixels)


# --- active contours ---


class ChanVese(ClassicalMethod):
    """Morphological Chan-Vese (Marquez-Neila et al. 2014): two regions of the best-fitting constant grey levels,
    started from Otsu's mask on the projection, smoothed ``smoothing`` times per step."""

    expensive = True
    work_size = 128

    def grid(self, in_channels):
        # from Otsu's start it settles within a few dozen steps (PH2: 30 and 100 steps scored alike)
        return {"channel": ["projection"], "iterations": [25, 60], "smoothing": [1, 3], "sigma": [1]}

    def segment(self, image, params):
        from skimage.segmentation import morphological_chan_vese

        g = self.grey(image, params)
        start = self.memo("otsu", g, (), lambda: otsu_mask(g))
        if start.all() or not start.any():
            return start.astype(np.float32)
        level = morphological_chan_vese(
            g, int(params.get("iterations", 50)), init_level_set=start, smoothing=int(params.get("smoothing", 1))
        ).astype(bool)
        if level.all() or not level.any():
            return level.astype(np.float32)
        return (level if g[level].mean() >= g[~level].mean() else ~level).astype(np.float32)


class GeodesicSnake(ClassicalMethod):
    """Morphological geodesic active contour: Otsu's mask on the projection moved towards edges (the inverse
    Gaussian gradient), with a balloon force that grows (+1) or shrinks (-1) it."""

    expensive = True
    work_size = 128

    def grid(self, in_channels):
        # a few steps from Otsu's start: the balloon otherwise carries the contour past the edge (PH2: 10 steps
        # at 128 px scored 0.91 in training, 40 steps 0.83)
        return {"channel": ["projection"], "iterations": [5, 10, 20, 40], "balloon": [-1, 1], "sigma": [1]}

    def segment(self, image, params):
        from skimage.segmentation import inverse_gaussian_gradient, morphological_geodesic_active_contour

        g = self.grey(image, params)
        start = self.memo("otsu", g, (), lambda: otsu_mask(g))
        if start.all() or not start.any():
            return start.astype(np.float32)
        scaled = (g - g.min()) / (float(g.max() - g.min()) + SMALL)
        edges = inverse_gaussian_gradient(scaled)
        level = morphological_geodesic_active_contour(
            edges,
            int(params.get("iterations", 100)),
            init_level_set=start,
            smoothing=1,
            balloon=int(params.get("balloon", 0)),
        )
        return level.astype(np.float32)


# --- superpixels and graph partitions, classified ---


class _Regions(ClassicalMethod):
    """Regions (superpixels or graph partitions) classified as foreground by a logistic regression on their mean and
    spread per channel and distance from the image centre, fitted on the training images' regions."""

    def regions(self, image: np.ndarray, params: dict) -> np.ndarray:
        raise NotImplementedError

    def predict(self, image, params):
        return self.segment(image, params)  # the regions are found at the working size, classified at full size

    def region_map(self, image: np.ndarray, params: dict) -> np.ndarray:
        """:meth:`regions` of ``image`` at the working size, as labels 0..n-1 of the full-size grid; remembered
        during a search, where each candidate learns from the regions it then segments."""
        size = int(params.get("work_size", 0))
        shown = tuple(sorted((k, str(v)) for k, v in params.items() if not k.startswith("clf_") and k != "projection"))

        def compute():
            small = self.memo("shrink", image, (size,), lambda: shrink(image, size))
            labels = self.regions(small, params)
            return labels if small is image else _nearest_labels(labels, image.shape[1:])

        return self.memo("regions", image, shown, compute)

    def learn(self, images, masks, params):
        from sklearn.linear_model import LogisticRegression

        feats, labels = [], []
        for image, mask in zip(images, masks):
            regions = self.region_map(image, params)
            f, counts = _region_features(image, regions)
            fg = np.bincount(regions.reshape(-1), (mask.reshape(-1) > 0).astype(float), len(counts))
            keep = counts > 0
            feats.append(f[keep])
            labels.append(fg[keep] / counts[keep] > 0.5)
        x, y = np.concatenate(feats), np.concatenate(labels)
        mean, scale = x.mean(0), x.std(0) + SMALL
        if y.all() or not y.any():
            return {
                "clf_coef": [0.0] * x.shape[1],
                "clf_intercept": 8.0 if y.all() else -8.0,
                "clf_mean": mean.tolist(),
                "clf_scale": scale.tolist(),
            }
        clf = LogisticRegression(max_iter=500).fit((x - mean) / scale, y)
        return {
            "clf_coef": clf.coef_[0].tolist(),
            "clf_intercept": float(clf.intercept_[0]),
            "clf_mean": mean.tolist(),
            "clf_scale": scale.tolist(),
        }

    def segment(self, image, params):
        regions = self.region_map(image, params)
        f, _counts = _region_features(image, regions)
        if "clf_coef" not in params:
            return np.zeros(image.shape[1:], np.float32)
        z = (f - np.asarray(params["clf_mean"])) / np.asarray(params["clf_scale"])
        prob = 1 / (1 + np.exp(-(z @ np.asarray(params["clf_coef"]) + float(params["clf_intercept"]))))
        return prob[regions].astype(np.float32)


def _nearest_labels(labels: np.ndarray, shape: tuple) -> np.ndarray:
    """Region labels resized to ``shape`` by nearest neighbour, renumbered 0..n-1 (a small region may vanish)."""
    index = np.ix_(*(np.minimum((np.arange(n) + 0.5) * s / n, s - 1).astype(int) for n, s in zip(shape, labels.shape)))
    _, relabelled = np.unique(labels[index], return_inverse=True)
    return relabelled.reshape(shape)


def _region_features(image: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per region (labels 0..n-1): mean and standard deviation of each channel, and the mean distance of its pixels
    from the image centre (in half-diagonals); and the regions' pixel counts."""
    flat = regions.reshape(-1)
    n = int(flat.max()) + 1
    counts = np.bincount(flat, minlength=n).astype(float)
    safe = np.maximum(counts, 1)
    feats = []
    for ch in image.reshape(image.shape[0], -1).astype(np.float64):
        mean = np.bincount(flat, ch, n) / safe
        var = np.bincount(flat, ch**2, n) / safe - mean**2
        feats += [mean, np.sqrt(np.maximum(var, 0))]
    grids = np.meshgrid(*(np.linspace(-1, 1, s) for s in regions.shape), indexing="ij")
    dist = np.sqrt(sum(g**2 for g in grids)).reshape(-1) / np.sqrt(len(grids))
    feats.append(np.bincount(flat, dist, n) / safe)
    return np.stack(feats, 1), counts


def _channels_last(image: np.ndarray) -> np.ndarray:
    return np.moveaxis(image, 0, -1).astype(np.float64)


class Superpixels(_Regions):
    """SLIC superpixels (Achanta et al. 2012), classified by their colour and position."""

    def grid(self, in_channels):
        return {"n_segments": [100, 300], "compactness": [0.1, 1.0]}

    def regions(self, image, params):
        from skimage.segmentation import slic

        scaled = (image - image.mean()) / (image.std() + SMALL)
        return slic(
            _channels_last(scaled),
            n_segments=int(params.get("n_segments", 200)),
            compactness=float(params.get("compactness", 1.0)),
            channel_axis=-1,
            start_label=0,
            convert2lab=False,  # the channels are normalised intensities, not RGB in [0, 1]
        )


class Felzenszwalb(_Regions):
    """Felzenszwalb and Huttenlocher's graph-based segmentation (2004), its regions classified (2D)."""

    dims = (2,)

    def grid(self, in_channels):
        return {"scale": [50, 200, 800]}

    def regions(self, image, params):
        from skimage.segmentation import felzenszwalb

        scaled = (image - image.mean()) / (image.std() + SMALL)
        return felzenszwalb(
            _channels_last(scaled), scale=float(params.get("scale", 200)), sigma=0.8, min_size=20, channel_axis=-1
        )


class NormalisedCut(_Regions):
    """Normalised cuts (Shi and Malik 2000) on the region adjacency graph of SLIC superpixels: the spectral,
    graph-theoretic partition, its parts classified (2D)."""

    dims = (2,)
    expensive = True  # its cost is the eigenvectors of the superpixel graph, not the pixels: no smaller working size

    def grid(self, in_channels):
        # thresh 0.001 cuts into superpixel-sized parts (PH2: training Dice 0.53 against 0.84 for 0.05)
        return {"n_segments": [150], "similarity": [0.05, 0.2], "thresh": [0.05]}

    def regions(self, image, params):
        from skimage import graph
        from skimage.segmentation import slic

        scaled = (image - image.mean()) / (image.std() + SMALL)
        pixels = _channels_last(scaled)
        n_segments = int(params.get("n_segments", 150))
        slic_of = lambda: slic(
            pixels, n_segments=n_segments, compactness=1.0, channel_axis=-1, start_label=0, convert2lab=False
        )
        labels = self.memo("slic", image, (n_segments,), slic_of)  # one superpixel graph for every cut of it
        # edge weights exp(-d^2 / similarity) for colour distances d of standardised images (skimage's default of 255
        # suits 8-bit colours and would weight every edge alike here)
        sim = float(params.get("similarity", 0.05))
        if labels.max() == 0:  # one superpixel: no graph to cut
            return labels
        rag = graph.rag_mean_color(pixels, labels, mode="similarity", sigma=sim)
        parts = graph.cut_normalized(labels, rag, thresh=float(params.get("thresh", 0.001)), rng=0)
        _, relabelled = np.unique(parts, return_inverse=True)
        return relabelled.reshape(parts.shape)


METHODS: dict[str, type[ClassicalMethod]] = {
    "otsu": Otsu,
    "multiotsu": MultiOtsu,
    "adaptive": Adaptive,
    "region_growing": RegionGrowing,
    "edges": Edges,
    "kmeans": KMeansClusters,
    "gmm": GaussianMixtureClusters,
    "watershed": Watershed,
    "random_walker": RandomWalker,
    "graph_cut": GraphCut,
    "chan_vese": ChanVese,
    "snake": GeodesicSnake,
    "slic": Superpixels,
    "felzenszwalb": Felzenszwalb,
    "normalised_cut": NormalisedCut,
}


def builder(name: str):
    def build(**kwargs) -> ClassicalMethod:
        check(name)(kwargs)
        return METHODS[name](**kwargs)

    return build


def check(name: str):
    def check_args(kwargs: dict) -> None:
        method = METHODS[name]
        if int(kwargs.get("out_channels", 1)) != 1:
            raise ValueError(
                f"{name} segments one foreground class; set data.labels to background and one class "
                "(or merge the classes into one with data.label_values)"
            )
        if int(kwargs.get("spatial_dims", 2)) not in method.dims:
            raise ValueError(f"{name} works on {' and '.join(f'{d}D' for d in method.dims)} images only")

    return check_args


def stride(_kwargs: dict) -> int:
    return 1
