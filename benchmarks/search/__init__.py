"""Search stage: engines behind one interface and the efficiency study that times them.

``registry`` (engine table, ``create_engine``), ``base`` (the interface), ``popcount`` / ``faiss_binary`` /
``float_ip`` (the engines), ``workload`` (databases and queries), ``timing`` (fair timing, recall),
``study`` (``run_efficiency``: rows, cells), ``summary`` (ratio tables, targets, latency figure).
"""
