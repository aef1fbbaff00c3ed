"""Where raw audit entries come from: each module is one source behind the one seam.

* :mod:`.base`: the :class:`~ingest.sources.base.Source` protocol (batches of raw records with an
  ordered position, then ``commit``) and :class:`~ingest.sources.base.RawRecord`;
* :mod:`.file`: plain and ``.gz`` files, directories of them, and ``tail -F`` of one file;
* :mod:`.socket`: a listener for Vault's / OpenBao's ``socket`` audit device;
* :mod:`.stdin`: a pipe or any binary stream;
* :mod:`.kafka`: a consumer-group source, and the dead-letter queue for refused records;
* :mod:`.checkpoint`: the atomic checkpoint files and the line splitter the others share.

The submodules are imported by name (``from ingest.sources.kafka import KafkaSource``) so that
a caller loads only what it uses (the Kafka module pulls in the Kafka client). So the public
surface in ``__all__`` is the submodules themselves; importing this package loads none.
"""

__all__ = ["base", "checkpoint", "file", "kafka", "socket", "stdin"]
