"""LGG: k-fold cross-validation of configs/lgg.yaml by patient; per-patient Dice (slices stacked per patient).

    python benchmarks/lgg_cv.py --data-dir ../shared/data/lgg --folds 5
"""

from _cv import run_cv

if __name__ == "__main__":
    run_cv("lgg", "../shared/data/lgg")
