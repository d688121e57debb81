"""Segments: who is a positive (labels), who is eligible, who is a member (`definitions`, `membership`: pure);
labels on Ray in `distributed`."""

from jobs.segments.definitions import check_segment, eligible_mask, label_column, labels_table, wide_labels
from jobs.segments.membership import membership

__all__ = ["check_segment", "eligible_mask", "label_column", "labels_table", "membership", "wide_labels"]
