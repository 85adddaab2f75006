/*
 * The process side of the fake libgpiod tools (test/helpers/fake-gpiod.ts):
 * installed as gpiomon, gpioget and gpioset, it sends its name and arguments
 * to the test's board over a unix socket and plays back what the board
 * answers: "1 <text>" to stdout, "2 <text>" to stderr, "x <code>" to exit.
 * It starts in a millisecond, as the real tools do, however loaded the
 * machine is, so the driver's timing sees what it would see on a device.
 * Killed, it closes the socket and the board releases its line, as the
 * kernel does for a real tool. FAKE_GPIOD_SOCKET is set at compile time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main (int argc, char **argv)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	const char *name = strrchr(argv[0], '/');
	char line[4096];
	FILE *in;
	int fd, i;

	name = name == NULL ? argv[0] : name + 1;
	strncpy(addr.sun_path, FAKE_GPIOD_SOCKET, sizeof(addr.sun_path) - 1);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "%s: fake board unreachable: %s\n", name, strerror(errno));
		return 1;
	}
	/* one request: the tool's name and arguments, NUL-separated, ended by a newline */
	dprintf(fd, "%s", name);
	for (i = 1; i < argc; i++) {
		if (strchr(argv[i], '\n') != NULL)
			return 1;
		dprintf(fd, "%c%s", '\0', argv[i]);
	}
	dprintf(fd, "\n");
	in = fdopen(fd, "r");
	while (fgets(line, sizeof(line), in) != NULL) {
		if (line[0] == 'x')
			return atoi(line + 2);
		fputs(line + 2, line[0] == '1' ? stdout : stderr);
		fflush(line[0] == '1' ? stdout : stderr);
	}
	/* the board went away: a tool whose chip vanished exits with an error */
	fprintf(stderr, "%s: error waiting for events: No such device\n", name);
	return 1;
}
