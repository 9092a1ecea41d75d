/*-------------------------------------------------------------------------
 *
 * main.c
 *		The jobq command: queue jobs, run external tasks, watch the queue.
 *
 *		jobq enqueue ...    queue SQL jobs or task jobs
 *		jobq work ...       run jobs of external tasks, a process per job
 *		jobq top            a live view of queues, workers and executors
 *		jobq status|wait|cancel|retry ID
 *
 * IDENTIFICATION
 *		cli/main.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "jobq_cli.h"

static void
usage(FILE *out)
{
	fprintf(out,
			"jobq is the command-line client of the jobq extension: it queues jobs,\n"
			"runs jobs of external tasks, and shows the queue.\n"
			"\n"
			"Usage:\n"
			"  jobq enqueue [OPTION]... SQL\n"
			"  jobq enqueue --task NAME [--payload JSON | --payload-file FILE] [OPTION]...\n"
			"  jobq work [OPTION]... (--task NAME=COMMAND... | --tasks-dir DIR | --task NAME -- COMMAND [ARG]...)\n"
			"  jobq top [--once] [--interval D]\n"
			"  jobq status|wait|cancel|retry ID [--json]\n"
			"\n"
			"Connection options (as psql's; libpq's PG* variables and ~/.pgpass apply):\n"
			CONN_HELP
			"\n"
			"Run \"jobq COMMAND --help\" for the options of a command.\n"
			"Exit status: 0 success, 1 error, 2 bad usage, 3 nothing to do (work --once).\n");
}

int
main(int argc, char **argv)
{
	const char *cmd;

	pg_logging_init(argv[0]);
	if (argc < 2)
	{
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-?") == 0 ||
		strcmp(cmd, "help") == 0)
	{
		usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0)
	{
		printf("jobq %s\n", JOBQ_CLI_VERSION);
		return EXIT_OK;
	}

	/* the subcommand sees itself as argv[0] */
	if (strcmp(cmd, "enqueue") == 0)
		return cmd_enqueue(argc - 1, argv + 1);
	if (strcmp(cmd, "work") == 0)
		return cmd_work(argc - 1, argv + 1);
	if (strcmp(cmd, "top") == 0)
		return cmd_top(argc - 1, argv + 1);
	if (strcmp(cmd, "status") == 0 || strcmp(cmd, "wait") == 0 ||
		strcmp(cmd, "cancel") == 0 || strcmp(cmd, "retry") == 0)
		return cmd_job(cmd, argc - 1, argv + 1);

	cli_error("unknown command \"%s\"", cmd);
	pg_log_error_hint("Try \"jobq --help\" for more information.");
	return EXIT_USAGE;
}
