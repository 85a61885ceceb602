/* The pod sandbox's process for the local node (hack/node.sh): it holds the pod's
 * namespaces and does nothing else until it is told to stop. Built with
 * `gcc -static`, so the sandbox image needs no registry. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { _exit(sig == SIGINT || sig == SIGTERM ? 0 : 1); }

/* As PID 1 of the pod it also reaps orphans, which would otherwise stay zombies. */
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
	signal(SIGINT, stop);
	signal(SIGTERM, stop);
	signal(SIGCHLD, reap);
	for (;;) pause();
}
