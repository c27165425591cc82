/* l2-rdmsr CPU MSR: print the MSR's value on that CPU in hex (via /dev/cpu/CPU/msr).
 * Used by the nested kvm-clock check: MSR_KVM_SYSTEM_TIME_NEW (0x4b564d01) holds the
 * guest-physical address of the vCPU's pvclock area, bit 0 set when it is enabled. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char path[64];
	uint64_t value;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: l2-rdmsr CPU MSR\n");
		return 2;
	}
	snprintf(path, sizeof(path), "/dev/cpu/%d/msr", atoi(argv[1]));
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror(path);
		return 1;
	}
	if (pread(fd, &value, sizeof(value), (off_t)strtoull(argv[2], NULL, 0)) != sizeof(value)) {
		perror("pread");
		return 1;
	}
	printf("cpu %s msr %s = 0x%" PRIx64 "\n", argv[1], argv[2], value);
	return 0;
}
