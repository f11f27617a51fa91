"""dtf.lognoise: Celery's and kombu's broker trouble in one line per event, in dtf's processes."""

from __future__ import annotations

import io
import logging

from dtf.lognoise import BrokerNoise, one_line

SENTINEL_ERROR = ("consumer: Cannot connect to sentinel://:**@127.0.0.1:52755//: No master found for 'dtf-ha' : "
                  "<redis.client.Redis(<redis.connection.ConnectionPool(<redis.connection.Connection(db=0,"
                  + "x" * 3000 + ")>)>)> - network:ConnectionError: Error 111.\nWill retry using next failover.\n")


def logged(name: str, level: int, msg: str, exc: BaseException | None = None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(BrokerNoise())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc is None:
            logger.log(level, msg)
        else:
            try:
                raise exc
            except type(exc):
                logger.log(level, msg, exc_info=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_a_sentinel_reconnect_error_is_one_short_line() -> None:
    out = logged("celery.worker.consumer.consumer", logging.ERROR, SENTINEL_ERROR)
    assert out == "consumer: Cannot connect to sentinel://:**@127.0.0.1:52755//: No master found for 'dtf-ha'\n"


def test_a_connection_traceback_is_dropped_below_debug() -> None:
    out = logged("kombu.connection", logging.WARNING, "broker connection lost", ConnectionError("reset by peer"))
    assert out == "broker connection lost\n"


def test_dtf_records_and_other_celery_records_pass_unchanged() -> None:
    assert logged("dtf.worker", logging.WARNING, "cannot reach broker\nsecond line") == "cannot reach broker\nsecond line\n"
    assert "Traceback" in logged("celery.app.trace", logging.ERROR, "Task failed", ValueError("boom"))


def test_one_line_caps_the_length() -> None:
    assert len(one_line("connect " + "y" * 1000)) == 300
