"""PH2: k-fold cross-validation of configs/ph2.yaml; per-image Dice/Jaccard at each image's original resolution.

python benchmarks/ph2_cv.py --data-dir ../shared/data/ph2                 # 5 folds
python benchmarks/ph2_cv.py --data-dir ../shared/data/ph2 --only 0 --tta  # one fold, flip TTA

The same run as ``medseg cv ph2 --data-dir ../shared/data/ph2 --folds 5 --out runs/cv-ph2 --score-best``, with one
JSON line per fold and one for the mean.
"""

from _cv import run_cv

if __name__ == "__main__":
    run_cv("ph2", "../shared/data/ph2")
