"""Input/output: DICOM discovery, grouping, sorting and decoding; NIfTI; series-role classification; DICOM export."""
