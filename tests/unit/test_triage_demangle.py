"""Rust v0 demangling of kernel stack frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprolab.detect.demangle import demangle


@pytest.mark.parametrize(
    ("mangled", "readable"),
    [
        ("_RNvCscSpY9Juk0HT_7___rustc17rust_begin_unwind", "__rustc::rust_begin_unwind"),
        ("_RNvMs3_NtCshgDM7dBCdno_11rust_binder7processNtB5_7Process10update_ref",
         "<rust_binder::process::Process>::update_ref"),
        ("_RNvXs1b_NtCs9jEwPDbx20M_4core3fmtRNtNtNtB8_5panic10panic_info9PanicInfoNtB6_7Display3"
         "fmtCs43vyB533jt3_6kernel", "<&core::panic::panic_info::PanicInfo as core::fmt::Display>"
         "::fmt"),
        ("do_syscall_64", "do_syscall_64"),
        ("_RNv", "_RNv"),
        ("_RNvB9_3foo", "_RNvB9_3foo"),  # a backref pointing forward is refused
    ],
)
def test_demangle(mangled: str, readable: str) -> None:
    assert demangle(mangled) == readable


@given(st.text(alphabet="_RNvMXYICBsutKLEpSAT0123456789abcxyz", max_size=80))
def test_demangle_never_raises(text: str) -> None:
    assert isinstance(demangle("_R" + text), str)
