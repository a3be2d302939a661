"""The pynetdicom internals the adapter touches (adapter/dimse/pynetdicom_setup.py, server.py)
are where we expect them: a pynetdicom release that moves one fails here, by name, instead of
silently losing chunked receive, our File Meta, or getscu's clean release."""

from __future__ import annotations

import inspect

import pynetdicom
import pynetdicom.dimse_messages
import pynetdicom.events
from pynetdicom import AE, _config
from pynetdicom.transport import ThreadedAssociationServer

import adapter.dimse.pynetdicom_setup as setup


def test_pynetdicom_is_the_minor_version_pyproject_pins() -> None:
    assert pynetdicom.__version__.startswith("3.0."), (
        f"pynetdicom {pynetdicom.__version__}: adapter/dimse/pynetdicom_setup.py was written "
        "against 3.0; check each internal below, then widen the pin in pyproject.toml"
    )


def test_the_replaced_module_globals_are_the_ones_pynetdicom_calls() -> None:
    source = inspect.getsource(pynetdicom.dimse_messages)
    assert "NamedTemporaryFile(" in source, "chunked receive no longer uses NamedTemporaryFile"
    assert "create_file_meta(" in source, "chunked receive no longer calls create_file_meta"
    assert "create_file_meta(" in inspect.getsource(pynetdicom.events)
    assert pynetdicom.dimse_messages.NamedTemporaryFile is setup._named_temporary_file  # type: ignore[attr-defined]
    assert pynetdicom.dimse_messages.create_file_meta is setup._our_file_meta  # type: ignore[attr-defined]
    assert pynetdicom.events.create_file_meta is setup._our_file_meta  # type: ignore[attr-defined]


def test_the_replaced_method_and_settings_exist() -> None:
    message = pynetdicom.dimse_messages.DIMSEMessage
    assert message.encode_msg is setup._packed_encode_msg  # type: ignore[comparison-overlap]
    assert list(inspect.signature(setup._encode_msg).parameters) == [
        "self",
        "context_id",
        "max_pdu_length",
    ]
    assert _config.STORE_RECV_CHUNKED_DATASET and _config.STORE_SEND_CHUNKED_DATASET


def test_the_listener_internals_server_py_uses_exist() -> None:
    assert hasattr(ThreadedAssociationServer, "finish_request")
    ae = AE()
    assert hasattr(ae, "_servers") and hasattr(ae, "_maximum_associations")
    assert isinstance(AE.__dict__["maximum_associations"], property)
    assert "require_called_aet" in dir(ae) and "implementation_version_name" in dir(ae)
