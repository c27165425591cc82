"""Acceleration is KVM only when the CPU can and a guest really boots."""

from pathlib import Path

from reprolab.accel import cpu_virt_flag, detect_accel

NO_VIRT = "processor: 0\nflags\t\t: fpu vme de pse tsc msr pae sse sse2 ht syscall nx lm\n"
VMX = "processor: 0\nflags\t\t: fpu vme vmx sse sse2\n"


def test_no_flag_means_tcg_even_with_dev_kvm(tmp_path: Path) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    info = detect_accel(cpuinfo=NO_VIRT, dev_kvm=kvm, probe=lambda: (True, "never called"))
    assert info.accel == "tcg"
    assert "no vmx/svm flag" in info.reason and "not hardware virtualisation" in info.reason
    assert info.nested == "svm-emulated"


def test_flag_but_failed_probe_is_tcg(tmp_path: Path) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    info = detect_accel(cpuinfo=VMX, dev_kvm=kvm, probe=lambda: (False, "no banner in 45 s"))
    assert info.accel == "tcg" and "no banner" in info.reason


def test_flag_and_probe_is_kvm_with_nested_from_module(tmp_path: Path) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    params = tmp_path / "sys" / "kvm_intel" / "parameters"
    params.mkdir(parents=True)
    (params / "nested").write_text("Y\n")
    info = detect_accel(cpuinfo=VMX, dev_kvm=kvm, sys_module=tmp_path / "sys",
                        probe=lambda: (True, "ok"))
    assert (info.accel, info.nested) == ("kvm", "vmx")
    (params / "nested").write_text("N\n")
    info = detect_accel(cpuinfo=VMX, dev_kvm=kvm, sys_module=tmp_path / "sys",
                        probe=lambda: (True, "ok"))
    assert info.nested is None and "modprobe kvm_intel nested=1" in info.nested_reason


def test_cpu_flag_parsing() -> None:
    assert cpu_virt_flag(NO_VIRT) is None
    assert cpu_virt_flag(VMX) == "vmx"
    assert cpu_virt_flag("flags : svm lm\n") == "svm"
