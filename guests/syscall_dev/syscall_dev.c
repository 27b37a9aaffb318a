/* syscall_dev: the syscall guest with a block ("storage") and a net ("service0") device. */
#include "../syscall/syscall.c"
