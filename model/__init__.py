"""LensNet: the branched recurrent classifier, its preprocessing, training and export."""
