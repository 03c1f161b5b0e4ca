"""Attribution methods: one small file per family, each registered in METHODS."""
