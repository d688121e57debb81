"""Look-alike models: one booster load path (`booster`), fitting on Ray Train (`fit`), calibration, the RFM
baseline, quality figures and alarms, the HTML report, the models bundle and scoring. One concept per module."""
