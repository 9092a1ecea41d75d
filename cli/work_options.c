/*-------------------------------------------------------------------------
 *
 * work_options.c
 *		jobq work: the command line.
 *
 * The tasks (--task NAME=COMMAND, --tasks-dir DIR, --task NAME -- COMMAND),
 * the queues, and the limits of time and of concurrency; the executor's
 * name (--name, or HOST-PID).
 *
 * IDENTIFICATION
 *		cli/work_options.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <dirent.h>
#include <sys/stat.h>

#include "fe_utils/option_utils.h"
#include "getopt_long.h"
#include "work.h"

const char *exec_name;			/* --name, or HOST-PID */
char		hostname[64];
ConnOpts	conn_opts;
Task		tasks[MAX_TASKS];
int			ntasks;
const char *queues[MAX_TASKS];
int			nqueues;
int			concurrency = 1;
double		lease_s = 30;
double		grace_s = 30;
double		kill_after_s = 5;
bool		once = false;
double		once_wait_s = 0;

static void
usage(FILE *out)
{
	fprintf(out,
			"Usage:\n"
			"  jobq work [OPTION]... --task NAME=COMMAND [--task NAME=COMMAND]...\n"
			"  jobq work [OPTION]... --tasks-dir DIR\n"
			"  jobq work [OPTION]... --task NAME -- COMMAND [ARG]...\n"
			"\n"
			"Run jobs of external tasks: one process per job, the payload on its stdin,\n"
			"the job in JOBQ_JOB_ID, JOBQ_TASK, JOBQ_QUEUE, JOBQ_ATTEMPT, JOBQ_MAX_ATTEMPTS,\n"
			"JOBQ_PRIORITY, JOBQ_RUN_AT, JOBQ_OWNER.  Exit status 0 completes the job with\n"
			"stdout as its result (JSON, or {\"stdout\": ...}); another fails the attempt with\n"
			"the tail of stderr.  The connecting role needs EXECUTE on jobq.claim() and the\n"
			"other executor functions.\n"
			"\n"
			"Options:\n"
			"  -t, --task=NAME=COMMAND   run task NAME with sh -c COMMAND\n"
			"      --tasks-dir=DIR       run task NAME as the executable DIR/NAME\n"
			"  -q, --queue=QUEUE         claim only from QUEUE (repeatable; default any)\n"
			"  -c, --concurrency=N       jobs run at once (default 1)\n"
			"      --lease=D             lease per job, kept by heartbeats (default 30s)\n"
			"      --name=NAME           this executor's name in jobq.executors (default HOST-PID)\n"
			"      --grace=D             on SIGINT/SIGTERM, time running jobs get (default 30s)\n"
			"      --kill-after=D        SIGKILL this long after SIGTERM (default 5s)\n"
			"      --once                run one job, then exit (status 3 if there was none)\n"
			"      --wait=D              with --once, wait this long for a job (default 0)\n"
			"  -d, -h, -p, -U, -w, -W    connection options, as psql's\n");
}

/*
 * Why name cannot be a task's name, or NULL if it can: what the server
 * takes is 1 to 63 bytes of text (valid UTF-8, the client encoding), not
 * in the "jobq." namespace.  One name it does not take in a claim's list
 * would fail every claim, forever.
 */
static const char *
bad_task_name(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0 || len > 63)
		return "a task name is 1 to 63 bytes";
	if (!is_valid_utf8(name, len))
		return "a task name is text in UTF-8";
	if (strncmp(name, "jobq.", 5) == 0)
		return "task names that begin with \"jobq.\" belong to the jobq extension";
	return NULL;
}

/*
 * The executables of DIR, each a task of its name.  A file whose name
 * cannot be a task's is skipped with a warning: it is no task, and the
 * others are served.
 */
static void
load_tasks_dir(const char *dir)
{
	DIR		   *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		cli_fatal(EXIT_ERROR, "could not open tasks directory \"%s\": %m", dir);
	while ((e = readdir(d)) != NULL)
	{
		char		path[MAXPGPATH];
		struct stat st;
		const char *why;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || access(path, X_OK) != 0)
			continue;
		if ((why = bad_task_name(e->d_name)) != NULL)
		{
			cli_warning("skipping \"%s\" in tasks directory \"%s\": %s",
						e->d_name, dir, why);
			continue;
		}
		if (ntasks >= MAX_TASKS)
			cli_fatal(EXIT_USAGE, "too many tasks (at most %d)", MAX_TASKS);
		tasks[ntasks].name = pg_strdup(e->d_name);
		tasks[ntasks].path = pg_strdup(path);
		ntasks++;
	}
	closedir(d);
	if (ntasks == 0)
		cli_fatal(EXIT_ERROR, "tasks directory \"%s\" has no executable files named as tasks", dir);
}

const Task *
find_task(const char *name)
{
	int			i;

	for (i = 0; i < ntasks; i++)
		if (strcmp(tasks[i].name, name) == 0)
			return &tasks[i];
	return NULL;
}

/*
 * --task NAME=COMMAND, or --task NAME whose command follows "--" (at most
 * one: *bare names it).
 */
static void
add_task(const char *arg, const char **bare)
{
	const char *eq = strchr(arg, '=');
	size_t		len = eq ? (size_t) (eq - arg) : strlen(arg);
	Task	   *t;
	const char *why;

	if (ntasks >= MAX_TASKS)
		cli_fatal(EXIT_USAGE, "too many tasks (at most %d)", MAX_TASKS);
	t = &tasks[ntasks++];
	t->name = pnstrdup(arg, len);
	if ((why = bad_task_name(t->name)) != NULL)
		cli_fatal(EXIT_USAGE, "invalid task \"%s\": %s", arg, why);
	if (eq)
	{
		if (eq[1] == '\0')
			cli_fatal(EXIT_USAGE, "task \"%s\" has an empty command", t->name);
		t->shell = pg_strdup(eq + 1);
	}
	else
	{
		if (*bare)
			cli_fatal(EXIT_USAGE, "only one --task NAME may take its command after --");
		*bare = t->name;
	}
}

/* the command of --task NAME: the arguments after "--" */
static void
take_command(const char *bare, int argc, char **argv)
{
	Task	   *t;
	int			k;

	if (bare == NULL)
	{
		if (optind < argc)
			cli_fatal(EXIT_USAGE, "unexpected argument \"%s\"; try \"jobq work --help\"", argv[optind]);
		return;
	}
	if (optind >= argc)
		cli_fatal(EXIT_USAGE, "task \"%s\" needs its command after --", bare);
	for (t = tasks; strcmp(t->name, bare) != 0; t++)
		;
	t->argv = pg_malloc0_array(char *, argc - optind + 1);
	for (k = optind; k < argc; k++)
		t->argv[k - optind] = argv[k];
}

/* at least one task, and each once */
static void
check_tasks(void)
{
	int			i;
	int			k;

	if (ntasks == 0)
		cli_fatal(EXIT_USAGE, "no task to run: give --task NAME=COMMAND, --tasks-dir DIR or --task NAME -- COMMAND");
	for (i = 0; i < ntasks; i++)
		for (k = 0; k < i; k++)
			if (strcmp(tasks[k].name, tasks[i].name) == 0)
				cli_fatal(EXIT_USAGE, "task \"%s\" is given twice", tasks[i].name);
}

/* who the executor is: this host, and --name or HOST-PID */
static void
set_identity(void)
{
	static char default_name[64];

	if (gethostname(hostname, sizeof(hostname)) != 0)
		strlcpy(hostname, "localhost", sizeof(hostname));
	hostname[sizeof(hostname) - 1] = '\0';
	if (exec_name == NULL)
	{
		snprintf(default_name, sizeof(default_name), "%.40s-%d", hostname, (int) getpid());
		exec_name = default_name;
	}
}

/*
 * Read the command line into the settings above, and the tasks; exit
 * with a message on an error.
 */
void
work_options(int argc, char **argv)
{
	static struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"task", required_argument, NULL, 't'},
		{"tasks-dir", required_argument, NULL, 1},
		{"queue", required_argument, NULL, 'q'},
		{"concurrency", required_argument, NULL, 'c'},
		{"lease", required_argument, NULL, 2},
		{"name", required_argument, NULL, 3},
		{"grace", required_argument, NULL, 4},
		{"kill-after", required_argument, NULL, 5},
		{"once", no_argument, NULL, 6},
		{"wait", required_argument, NULL, 7},
		{"help", no_argument, NULL, 1000},
		{NULL, 0, NULL, 0}
	};
	const char *tasks_dir = NULL;
	const char *bare_task = NULL;	/* --task NAME, its command after -- */
	int			c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+" CONN_SHORT_OPTIONS "t:q:c:", long_options, NULL)) != -1)
	{
		if (conn_option(&conn_opts, c, optarg))
			continue;
		switch (c)
		{
			case 't':
				add_task(optarg, &bare_task);
				break;
			case 1:
				tasks_dir = optarg;
				break;
			case 'q':
				if (nqueues >= MAX_TASKS)
					cli_fatal(EXIT_USAGE, "too many queues (at most %d)", MAX_TASKS);
				if (optarg[0] == '\0' || strlen(optarg) > 63 ||
					!is_valid_utf8(optarg, strlen(optarg)))
					cli_fatal(EXIT_USAGE, "invalid queue \"%s\": a queue name is 1 to 63 bytes of UTF-8", optarg);
				queues[nqueues++] = optarg;
				break;
			case 'c':
				if (!option_parse_int(optarg, "-c/--concurrency", 1, MAX_CONCURRENCY,
									  &concurrency))
					exit(EXIT_USAGE);
				break;
			case 2:
				if (!parse_duration(optarg, &lease_s) || lease_s < 1)
					cli_fatal(EXIT_USAGE, "invalid lease \"%s\": at least 1 s, at most 7 days", optarg);
				break;
			case 3:
				if (optarg[0] == '\0' || strlen(optarg) > 63 ||
					!is_valid_utf8(optarg, strlen(optarg)))
					cli_fatal(EXIT_USAGE, "invalid name \"%s\": 1 to 63 bytes of UTF-8", optarg);
				exec_name = optarg;
				break;
			case 4:
				if (!parse_duration(optarg, &grace_s))
					cli_fatal(EXIT_USAGE, "invalid grace period \"%s\"", optarg);
				break;
			case 5:
				if (!parse_duration(optarg, &kill_after_s))
					cli_fatal(EXIT_USAGE, "invalid --kill-after \"%s\"", optarg);
				break;
			case 6:
				once = true;
				break;
			case 7:
				if (!parse_duration(optarg, &once_wait_s))
					cli_fatal(EXIT_USAGE, "invalid wait \"%s\"", optarg);
				break;
			case 1000:
				usage(stdout);
				exit(EXIT_OK);
			default:
				pg_log_error_hint("Try \"jobq work --help\" for more information.");
				exit(EXIT_USAGE);
		}
	}
	take_command(bare_task, argc, argv);
	if (tasks_dir)
		load_tasks_dir(tasks_dir);
	check_tasks();
	if (once)
		concurrency = 1;
	set_identity();
}
