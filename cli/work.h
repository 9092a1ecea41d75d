/*-------------------------------------------------------------------------
 *
 * work.h
 *		Declarations shared by the files of "jobq work", the executor.
 *
 * work.c is the loop: it waits on the connections, the processes'
 * output and signals, and calls the others.  work_options.c reads the
 * command line (the tasks, the queues, the limits); work_child.c runs a
 * job's process and watches it; work_lease.c talks to the server: the
 * connections, the claims and the lease calls (heartbeat, complete,
 * fail, release).
 *
 * IDENTIFICATION
 *		cli/work.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_WORK_H
#define JOBQ_WORK_H

#include <signal.h>

#include "jobq_cli.h"

#define MAX_CONCURRENCY		256
#define MAX_TASKS			256
#define STDOUT_CAP			(1024 * 1024)	/* result kept from stdout */
#define STDERR_TAIL			2000	/* error kept from stderr */
#define CLAIM_WAIT_S		5		/* one claim's wait; then claim again */
#define CTL_TIMEOUT_MS		10000	/* longest heartbeat or outcome statement */
#define CLAIM_SLACK_S		30		/* a claim's longest run past its wait */

/* one task the executor runs, and how */
typedef struct Task
{
	char	   *name;
	char	   *shell;			/* run with sh -c, or */
	char	   *path;			/* exec'd directly (--tasks-dir), or */
	char	  **argv;			/* exec'd with these arguments (--) */
} Task;

typedef enum Outcome
{
	OUT_NONE,
	OUT_COMPLETE,
	OUT_FAIL,
	OUT_RELEASE,
	OUT_DROP					/* nothing to report: cancelled, lease lost */
} Outcome;

/* a claimed job, from its claim to its delivered outcome */
typedef struct Job
{
	bool		used;
	char		id[24];
	char		token[40];
	char	   *task;
	char	   *queue;
	char	   *payload;
	char		attempt[16];
	char		max_attempts[16];
	char		priority[16];
	char	   *run_at;
	char	   *owner;
	double		timeout_s;		/* 0: none */
	double		started;
	double		next_heartbeat;
	double		kill_at;		/* SIGKILL then, once SIGTERM was sent */
	pid_t		pid;			/* 0 once reaped */
	int			out_fd;
	int			err_fd;
	char	   *out;
	size_t		out_len;
	bool		out_truncated;
	char		err[STDERR_TAIL];
	size_t		err_len;		/* bytes in err, a ring once full */
	size_t		err_total;
	int			wstatus;
	bool		exited;
	double		exited_at;
	bool		cancelled;		/* seen by a heartbeat */
	bool		lost;			/* the lease is gone */
	bool		timed_out;
	bool		stopped;		/* stopped by the executor's shutdown */
	Outcome		outcome;		/* to deliver, once decided */
} Job;

/* work_options.c: what the command line says, and who the executor is */
extern const char *exec_name;
extern char hostname[64];
extern ConnOpts conn_opts;
extern Task tasks[MAX_TASKS];
extern int	ntasks;
extern const char *queues[MAX_TASKS];
extern int	nqueues;
extern int	concurrency;
extern double lease_s;
extern double grace_s;
extern double kill_after_s;
extern bool once;
extern double once_wait_s;

extern void work_options(int argc, char **argv);
extern const Task *find_task(const char *name);

/* work.c: the loop's state */
extern Job *jobs;
extern int	signal_pipe[2];
extern volatile sig_atomic_t stop_signals;
extern double stop_deadline;
extern int	exit_status;

extern void logmsg(const char *fmt,...) pg_attribute_printf(1, 2);

/* work_child.c */
extern bool start_job(Job *j);
extern void stop_process(Job *j);
extern void read_output(Job *j, bool err);
extern void finish_output(Job *j, double now);
extern char *stderr_tail(const Job *j);
extern void decide_outcome(Job *j);
extern void free_job(Job *j);
extern int	running_jobs(void);
extern void reap_children(void);
extern void check_times(double now);

/* work_lease.c */
extern PGconn *claim_conn;
extern PGconn *ctl_conn;
extern bool claim_in_flight;
extern double claim_deadline;
extern double reconnect_at;
extern bool ran_one;
extern bool claimed_none;

extern bool ensure_connected(void);
extern void close_conn(PGconn **conn);
extern void send_claim(int n, double wait_s);
extern void watch_claim(double now);
extern void claim_result(void);
extern bool deliver(Job *j);
extern void heartbeats(double now);

#endif							/* JOBQ_WORK_H */
