/* kvm-hello: the smallest proof that /dev/kvm runs a guest (for nested-virtualisation cases).
 * One VM, one 4 KiB memory slot, one vCPU in real mode running "out %al,$0x10; hlt".
 * Exit 0 and print "kvm-hello: ok" only if KVM_RUN reports the port write, then the halt.
 * Built statically at image build: gcc -static -O2 -o kvm-hello kvm-hello.c */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

static int fail(const char *what) { perror(what); return 1; }

int main(void) {
    const unsigned char code[] = {0xb0, 0x2a, 0xe6, 0x10, 0xf4}; /* mov $42,%al; out %al,$0x10; hlt */
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), vm, cpu, saw_out = 0;
    if (kvm < 0) return fail("open /dev/kvm");
    if ((vm = ioctl(kvm, KVM_CREATE_VM, 0)) < 0) return fail("KVM_CREATE_VM");
    unsigned char *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return fail("mmap");
    memcpy(mem, code, sizeof code);
    struct kvm_userspace_memory_region slot = {.slot = 0, .guest_phys_addr = 0x1000,
        .memory_size = 0x1000, .userspace_addr = (unsigned long)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot) < 0) return fail("KVM_SET_USER_MEMORY_REGION");
    if ((cpu = ioctl(vm, KVM_CREATE_VCPU, 0)) < 0) return fail("KVM_CREATE_VCPU");
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
    if (run == MAP_FAILED) return fail("mmap vcpu");
    struct kvm_sregs sregs;
    if (ioctl(cpu, KVM_GET_SREGS, &sregs) < 0) return fail("KVM_GET_SREGS");
    sregs.cs.base = 0; sregs.cs.selector = 0;
    if (ioctl(cpu, KVM_SET_SREGS, &sregs) < 0) return fail("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 0x2};
    if (ioctl(cpu, KVM_SET_REGS, &regs) < 0) return fail("KVM_SET_REGS");
    for (;;) {
        if (ioctl(cpu, KVM_RUN, 0) < 0) return fail("KVM_RUN");
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x10 &&
            ((unsigned char *)run)[run->io.data_offset] == 42) { saw_out = 1; continue; }
        if (run->exit_reason == KVM_EXIT_HLT && saw_out) { puts("kvm-hello: ok"); return 0; }
        fprintf(stderr, "kvm-hello: unexpected exit %u\n", run->exit_reason);
        return 1;
    }
}
