"""Look-alike models, one concept per module:

booster      the one load path (`load_booster`), the one `model_version`, XGBoost's threads in a Ray worker
bundle       the `models/` bundle's files and the checks a reader makes before scoring with a model
examples     a labelled snapshot's rows as one segment's model sees them (eligibility, label, hash split)
fit          fitting on Ray Train (XGBoostTrainer)
calibration  the base-margin shift that makes the saved model predict probabilities
baselines    the RFM baseline a model must beat (a monotone booster)
champion     which candidate a segment exports: primary metric, margin, alarms, `rejected`
quality      metrics, lift, the permutation null, the leakage check, importance
report       the HTML quality page
training     one segment from labelled snapshots to its champion (refitted), its card and its figures
scoring      every trained model over a feature table on Ray (tasks with a fused read, percentiles)
"""
