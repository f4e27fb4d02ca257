"""LGG: k-fold cross-validation of configs/lgg.yaml by patient; per-patient Dice (slices stacked per patient).

python benchmarks/lgg_cv.py --data-dir ../shared/data/lgg --folds 5
# learning curve: the same held-out fold, 8 of its 16 training patients (a seeded, nested subset)
python benchmarks/lgg_cv.py --data-dir ../shared/data/lgg --only 0 --out runs/lc-8 --set data.split.max_train_groups=8

The same run as ``medseg cv lgg --data-dir ../shared/data/lgg --folds 5 --out runs/cv-lgg --score-best``, with one
JSON line per fold and one for the mean.
"""

from _cv import run_cv

if __name__ == "__main__":
    run_cv("lgg", "../shared/data/lgg")
