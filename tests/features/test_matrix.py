import numpy as np
import pyarrow as pa

from features.matrix import feature_matrix


def test_feature_matrix_is_float32_with_nan_for_missing_in_either_order():
    batch = pa.table(
        {
            "counts": pa.array([1, None, 3], pa.int64()),
            "amount": pa.array([0.5, 2.0, None], pa.float64()),
            "ratio": pa.array([np.nan, 0.25, 1.0], pa.float32()),
            "flag": pa.array([True, False, None]),
        }
    )
    expected = np.array([[1, 0.5, np.nan, 1], [np.nan, 2.0, 0.25, 0], [3, np.nan, 1.0, np.nan]], dtype=np.float32)
    for order in ("C", "F"):
        matrix = feature_matrix(batch, ["counts", "amount", "ratio", "flag"], order=order)
        assert matrix.dtype == np.float32 and matrix.flags[f"{order}_CONTIGUOUS"]
        np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_array_equal(feature_matrix(batch, ["ratio", "counts"]), expected[:, [2, 0]])
