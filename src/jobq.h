/*-------------------------------------------------------------------------
 *
 * jobq.h
 *		The core of jobq: its limits, the settings, the schema, a claimed job
 *		and its outcome, and the functions of the files that own no shared
 *		memory.
 *
 * jobq runs one static background worker, the launcher, and a pool of
 * dynamic workers that it starts.  Each file that owns a part of the
 * shared state (slots.c the worker slots, floors.c the claim floors, and
 * so on) is the only one to touch it, and declares what it offers in a
 * header of its own (slots.h, floors.h, wakeup.h, requests.h, prune.h,
 * journal.h, depend.h, lease.h, executors.h); doc/design.md maps the files
 * to their concerns and follows a job through them.
 *
 * IDENTIFICATION
 *		src/jobq.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_H
#define JOBQ_H

#include "postgres.h"

#include <signal.h>

#include "access/attnum.h"
#include "access/tableam.h"
#include "access/tupdesc.h"
#include "executor/spi.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "storage/itemptr.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/relcache.h"

/* Upper bound of jobq.workers; the shared segment has this many slots. */
#define JOBQ_MAX_WORKERS		64

/* Documented range of a job's priority (higher runs first). */
#define JOBQ_MIN_PRIORITY		(-1000)
#define JOBQ_MAX_PRIORITY		1000

/* Upper bound of max_attempts. */
#define JOBQ_MAX_ATTEMPTS		1000

/* Longest dedup key, in bytes (it is a key of a B-tree index). */
#define JOBQ_MAX_DEDUP_KEY		1024

/* Queue names are identifiers: at most NAMEDATALEN - 1 bytes. */
#define JOBQ_MAX_QUEUE_NAME		(NAMEDATALEN - 1)

/*
 * An execution transaction commits once this many of its committed
 * subtransactions (jobs that wrote, and their own savepoints) have XIDs,
 * staying below the 64 that PGPROC caches: beyond, every snapshot in the
 * server would have to look into pg_subtrans.  Jobs that only read take
 * no XID and do not count.
 */
#define JOBQ_CHUNK_MAX_SUBXIDS	63

/*
 * It also commits after JOBQ_CHUNK_BUDGET_MS milliseconds of jobs, so that
 * one slow job never holds finished ones uncommitted; or, when commits
 * are slow (a busy disk), after up to JOBQ_CHUNK_COMMIT_FACTOR times the
 * time its recent commits took, at most JOBQ_CHUNK_BUDGET_MAX_MS, so that
 * waiting for WAL to be flushed stays a small part of a worker's time.
 */
#define JOBQ_CHUNK_BUDGET_MS	10
#define JOBQ_CHUNK_COMMIT_FACTOR	4
#define JOBQ_CHUNK_BUDGET_MAX_MS	100

/*
 * After a job that took this long, a worker hands the rest of its batch
 * back, so that idle workers can take those jobs instead of waiting.
 */
#define JOBQ_SLOW_JOB_MS		20

/* Longest retry delay, whatever the attempt number. */
#define JOBQ_MAX_RETRY_DELAY_MS	(3600 * 1000)

/* Why a worker ended a job by exiting (see worker.c, the watchdog). */
typedef enum JobqEscalation
{
	JOBQ_ESCALATE_NONE = 0,
	JOBQ_ESCALATE_TIMEOUT,		/* ran past timeout + jobq.cancel_grace */
	JOBQ_ESCALATE_CANCEL,		/* ignored jobq.cancel() for the grace */
	JOBQ_ESCALATE_SHUTDOWN		/* ignored a shutdown for the grace */
} JobqEscalation;


/* guc.c */
extern char *jobq_database;
extern int	jobq_workers;
extern int	jobq_poll_interval;
extern int	jobq_batch_size;
extern int	jobq_default_max_attempts;
extern int	jobq_default_timeout;
extern int	jobq_retention;
extern int	jobq_retry_delay;
extern int	jobq_max_payload_size;
extern int	jobq_max_command_size;
extern int	jobq_max_result_size;
extern int	jobq_max_executors;
extern int	jobq_max_executors_per_role;
extern int	jobq_cancel_grace;
/* the largest value of the size settings: 512 MB */
#define JOBQ_MAX_SIZE_LIMIT		(512 * 1024 * 1024)
extern void JobqCheckSize(Datum value, const char *what, int limit,
						  const char *guc);
extern char *JobqClipText(char *s, int limit);
extern void JobqDefineGucs(void);
extern bool jobq_preloaded;
extern void JobqCheckPreloaded(void);

/* schema.c: the installed version of the extension and its tables */
typedef enum JobqRel
{
	JOBQ_REL_JOB,
	JOBQ_REL_HISTORY,
	JOBQ_REL_JOB_SEQ,
	JOBQ_REL_TASK,
	JOBQ_REL_QUEUES,
	JOBQ_REL_ROLE_LIMITS,
	JOBQ_REL_JOB_PKEY,
	JOBQ_REL_EXTERNAL_IDX,
	JOBQ_NUM_RELS
} JobqRel;

typedef struct JobqSchema
{
	bool		installed;		/* the extension and its two job tables */
	int			version;		/* 0.5.0 is 500; 0 if not installed */
	Oid			relids[JOBQ_NUM_RELS];	/* InvalidOid where missing */
	Oid			owner;			/* owner of the tables */
	bool		tasks;			/* tasks, dedup keys, dependencies (0.3.0) */
	bool		role_limits;	/* jobq.role_limits, jobq.job.counted (0.4.0) */
	bool		dedup_per_owner;	/* dedup keys unique per owner (0.4.0) */
	bool		job_state;		/* jobq.job.state (before 0.5.0) */
	bool		executors;		/* external tasks and leases (0.5.0) */
	bool		task_executors; /* executors allowed per task (0.6.0) */
	uint64		generation;		/* changes whenever any of the above does */
} JobqSchema;

extern const JobqSchema *JobqSchemaGet(void);
extern const JobqSchema *JobqSchemaRequire(void);
extern Oid	JobqSchemaRelid(const char *relname);
extern void JobqSchemaInstallHooks(void);
extern bool JobqLockTables(void);

/* last_error of a job that jobq.cancel() cancelled */
#define JOBQ_CANCELLED_MESSAGE	"job cancelled by jobq.cancel()"

/* launcher.c */
extern void JobqRegisterLauncher(void);
extern PGDLLEXPORT void JobqLauncherMain(Datum main_arg);

/* worker.c */
extern PGDLLEXPORT void JobqWorkerMain(Datum main_arg);
extern volatile sig_atomic_t jobq_in_job;
extern volatile sig_atomic_t jobq_shutdown_requested;
extern volatile int64 jobq_current_job_id;
extern bool JobqHeldByThisWorker(int64 id);

/* A claimed job, as the worker holds it between claim and outcome. */
typedef struct JobqJob
{
	int64		id;
	Oid			owner;
	char	   *queue;
	char	   *command;		/* SQL, or NULL for a task */
	char	   *task;			/* registered task, or NULL for SQL */
	Datum		payload;		/* the task's argument (jsonb) */
	int64		timeout_ms;		/* 0: no limit */
	int32		attempts;		/* this attempt's number, from 1 */
	int32		max_attempts;
	int16		priority;
	TimestampTz run_at;
	ItemPointerData tid;		/* its row, locked by the claim */
	bool		external;		/* a job of an external task (lease.c) */
} JobqJob;

/* What became of a claimed job. */
typedef enum JobqOutcomeKind
{
	JOBQ_SUCCEEDED,
	JOBQ_RETRY,					/* error with attempts left */
	JOBQ_FAILED,				/* error, no attempts left, or permanent */
	JOBQ_CANCELLED,				/* by jobq.cancel(): effects rolled back */
	JOBQ_RELEASE,				/* claimed, not run: stays pending as it
								 * was */
	JOBQ_INTERRUPTED			/* its run was interrupted: its worker was
								 * asked to stop.  Pending again after a
								 * growing delay, attempt not counted
								 * (finish.c) */
} JobqOutcomeKind;

typedef struct JobqOutcome
{
	JobqOutcomeKind kind;
	Datum		result;			/* jsonb, or 0 for null */
	char	   *error;			/* NULL if none */
	char		sqlstate[6];	/* "" if none */
	TimestampTz started_at;
	TimestampTz finished_at;
	TimestampTz next_run_at;	/* for JOBQ_RETRY */
	int32		pid;			/* the worker's (recorded as worker_pid), 0 */
} JobqOutcome;

/* claim.c: claiming due jobs */
extern int	JobqClaimInTransaction(int slot, int limit, MemoryContext cxt,
								   JobqJob **jobs, TimestampTz *next_due);

/* retry.c: jobs pending again after a run (retried, interrupted) */
extern TimestampTz JobqNextAttemptTime(int attempts);
extern void JobqWriteRetries(JobqJob *jobs, JobqOutcome *outcomes, int n);
extern void JobqWriteInterruptions(JobqJob *jobs, JobqOutcome *outcomes, int n);

/* finish.c: every way a job ends, or is scheduled again */
extern void JobqFinishJobs(JobqJob *jobs, JobqOutcome *outcomes, int n);
extern bool JobqClaimedJobGone(JobqJob *job);
extern void JobqSweepWaitingJobs(void);
extern void JobqRecheckDependents(void);
extern int	JobqCountCrashedAttempts(int n, int64 *ids, int32 *attempts,
									 TimestampTz *started, int32 *pids,
									 JobqEscalation *reasons);

/* spi.c: running jobq's own SQL */
extern int	JobqExecuteAsOwner(const char *sql, int nargs, Oid *argtypes,
							   Datum *values, bool read_only);
extern int	JobqExecuteAsOwnerNulls(const char *sql, int nargs, Oid *argtypes,
									Datum *values, const char *nulls,
									bool read_only);
extern int	JobqExecuteAsCaller(const char *sql, int nargs, Oid *argtypes,
								Datum *values, bool read_only);
/*
 * The kept statements of one file, all prepared again once the schema
 * changed (JobqKeepPlanIn).
 */
#define JOBQ_PLAN_SET_SIZE		16
typedef struct JobqPlanSet
{
	uint64		generation;		/* of the schema the plans were made for */
	int			nplans;
	SPIPlanPtr *plans[JOBQ_PLAN_SET_SIZE];
} JobqPlanSet;
extern SPIPlanPtr JobqKeepPlanIn(JobqPlanSet *set, SPIPlanPtr *plan,
								 const char *sql, int nargs, Oid *argtypes);
extern SPIPlanPtr JobqKeepPlan(SPIPlanPtr *plan, const char *sql, int nargs,
							   Oid *argtypes);
extern int	JobqExecuteKept(SPIPlanPtr plan, Datum *values, bool read_only);
extern int	JobqExecuteKeptAsOwner(SPIPlanPtr plan, Datum *values);
extern Datum JobqDatumArray(Datum *values, bool *nulls, int n, Oid elemtype);

/* store.c: direct writes to jobq's tables */
typedef struct JobqTable
{
	const char *relname;		/* in schema jobq */
	bool		valid;
	bool		stale;			/* invalidated since the last build began */
	uint64		generation;		/* bumped by every rebuild */
	MemoryContext cxt;
	Oid			relid;
	TupleDesc	desc;			/* a copy: not reference counted */
	EState	   *estate;		/* evaluates partial-index predicates */
	int			nindexes;
	Oid		   *indexids;
	IndexInfo **indexinfo;
	AttrNumber *skip_attno;		/* rows with this column null skip the index */
	ResultRelInfo *checks;		/* for the NOT NULL and CHECK constraints */
} JobqTable;

/* a backend's copy of a small table, read again after a change */
typedef struct JobqTableCopy
{
	const char *relname;		/* in schema jobq */
	Oid			relid;
	bool		valid;
	uint64		invalidations;	/* relcache invalidations of it seen */
	MemoryContext cxt;			/* holds the copy */
	void	   *rows;			/* the rows, as the loader made them */
	int			nrows;
} JobqTableCopy;

/* makes the element at elem of one row of a table copy */
typedef void (*JobqCopyFill) (void *elem, HeapTuple tup, TupleDesc desc);
extern void *JobqTableCopyLoad(JobqTableCopy *c, const char *sql, Size elemsize,
							   JobqCopyFill fill, int *n);

extern Relation JobqTableOpen(JobqTable *t);
extern AttrNumber JobqTableColumn(JobqTable *t, const char *name, Oid type,
								  bool required);
extern void JobqTableInsert(JobqTable *t, Relation rel,
							TupleTableSlot **slots, int n);
extern TM_Result JobqTableUpdate(JobqTable *t, Relation rel, ItemPointer tid,
								 TupleTableSlot *slot, Bitmapset *changed,
								 bool wait, TM_FailureData *tmfd);
extern TupleTableSlot *JobqTableSlot(JobqTable *t);

/* queue.c: queues and their settings */
typedef struct JobqQueueRule
{
	char		queue[NAMEDATALEN];
	int			concurrency;	/* 0: no limit */
	bool		paused;
} JobqQueueRule;

extern JobqQueueRule *JobqQueueRules(int *n);
extern int	JobqQueueLimit(const char *queue);

/* limits.c: per-role limits */
typedef struct JobqRoleLimit
{
	Oid			role;
	int			max_pending;	/* -1: no limit */
	int			max_running;	/* -1: no limit */
} JobqRoleLimit;

extern JobqRoleLimit *JobqRoleLimits(int *n);

/*
 * What the limits leave to a claim, a worker's or an executor's: the
 * queues with a setting and the roles with a limit, and how many jobs of
 * each are running (in workers) or leased (to executors) now.
 */
typedef struct JobqLimitTally
{
	JobqQueueRule *rules;
	int			nrules;
	int		   *queue_held;		/* per rule */
	JobqRoleLimit *roles;
	int			nroles;
	int		   *role_held;		/* per role limit */
} JobqLimitTally;

extern void JobqLimitsRead(JobqLimitTally *t);
extern bool JobqLimitsMayBind(const JobqLimitTally *t,
							  bool (*claims_queue) (const char *queue, void *arg),
							  void *arg);
extern void JobqLimitsCountHeld(JobqLimitTally *t);
extern bool JobqLimitsQueueBlocked(const JobqLimitTally *t, int rule);
extern bool JobqLimitsRoleBlocked(const JobqLimitTally *t, int role);
extern bool JobqLimitsBlock(const JobqLimitTally *t, const char *queue, Oid owner);
extern void JobqLimitsTake(JobqLimitTally *t, const char *queue, Oid owner);
extern int	JobqRoleRunningLimit(Oid role);
extern bool JobqRoleCheckEnqueue(Oid role);
extern void JobqRoleEnqueued(Oid role);
extern bool JobqRoleLockHeld(void);

/* task.c: registered tasks */
extern void JobqCheckTaskName(const char *name);
extern Oid	JobqTaskForEnqueue(const char *name, bool *external);
extern bool JobqTaskServes(const char *name, Oid role, Oid owner);
extern FmgrInfo *JobqTaskForJob(const char *name, Oid owner,
								volatile bool *permanent);

/* session.c: what jobs leave in a worker's session */
extern void JobqSessionInit(void);
extern bool JobqSessionMayRun(Oid owner);
extern void JobqSessionJobBegin(void);
extern void JobqSessionJobEnd(bool drop_temp);
extern void JobqCheckOwner(Oid owner, bool enqueuing, volatile bool *permanent);

/* inplace.c: a job run by its own transaction's jobq.wait() */
extern void JobqRunInPlace(int64 id);

/* execute.c */
extern void JobqExecuteJob(JobqJob *job, JobqOutcome *outcome,
						   MemoryContext job_context, bool here);
extern void JobqForgetRoleSettings(void);
extern volatile TimestampTz jobq_job_deadline;

#endif							/* JOBQ_H */
