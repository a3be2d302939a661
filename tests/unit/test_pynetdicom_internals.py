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


def test_the_wrapped_state_machine_abort_and_reactor_internals_exist() -> None:
    import pynetdicom.fsm
    import pynetdicom.pdu
    from pynetdicom.association import Association

    assert pynetdicom.fsm.StateMachine.do_action is setup._guarded_do_action  # type: ignore[comparison-overlap]
    assert {"AA-2", "AA-8"} <= set(pynetdicom.fsm.ACTIONS)
    assert all(len(action) == 3 for action in pynetdicom.fsm.ACTIONS.values())
    assert pynetdicom.pdu.A_ABORT_RQ.to_primitive is setup._lenient_abort_to_primitive  # type: ignore[comparison-overlap]
    assert Association.run_reactor is setup._closing_run_reactor  # type: ignore[comparison-overlap]
    assert Association._serve_request is setup._cleaning_serve_request  # type: ignore[comparison-overlap]
    assert list(inspect.signature(setup._serve_request).parameters) == [
        "self",
        "msg",
        "context_id",
    ]
