/* The shared stack of the net guest, compiled into this one too. */
#include "../net/netstack.c"
