// Test module for recording real lockup reports: spins in module init.
#include <linux/module.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/preempt.h>
#include <linux/workqueue.h>

static int seconds = 30;
module_param(seconds, int, 0444);
static char *mode = "softlockup";
module_param(mode, charp, 0444);

static noinline void rl_spin_loop(unsigned long end)
{
	while (time_before(jiffies, end))
		mdelay(1);
}

static void rl_work_fn(struct work_struct *w)
{
	rl_spin_loop(jiffies + seconds * HZ);
}
static DECLARE_WORK(rl_work, rl_work_fn);

static int __init rl_spin_init(void)
{
	if (!strcmp(mode, "wq")) {
		schedule_work(&rl_work);
		return 0;
	}
	preempt_disable();
	rl_spin_loop(jiffies + seconds * HZ);
	preempt_enable();
	return 0;
}

static void __exit rl_spin_exit(void) { flush_work(&rl_work); }
module_init(rl_spin_init);
module_exit(rl_spin_exit);
MODULE_LICENSE("GPL");
