"""napari widgets, sample data, readers and writers: the only place that imports napari or Qt."""
