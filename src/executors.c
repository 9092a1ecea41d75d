/*-------------------------------------------------------------------------
 *
 * executors.c
 *		The registry of external executors behind the view jobq.executors.
 *
 * An executor is known by the role it connects as and the name it gives
 * jobq.claim() (by default its application_name).  Shared memory keeps,
 * per (role, name), where it says it runs and what it did, since the
 * server started.  The table has jobq.max_executors entries, sized at
 * start; it is only a view of what happened, never consulted by a claim,
 * so an executor whose entry cannot be made claims all the same.
 *
 * Any role granted jobq.claim() may make entries, so none may crowd out
 * another's:
 *	- an entry belongs to the role that made it: the same name given by
 *	  another role is another entry, and never changes this one;
 *	- a role holds at most jobq.max_executors_per_role entries; past that,
 *	  its own entry seen longest ago makes room;
 *	- a free entry is taken first, then one not seen for an hour (its
 *	  executor is gone); an entry seen within the hour is never given to
 *	  another role.  With none of those, the new name is not recorded.
 *
 * The table is scanned under an LWLock (it may be large), except for the
 * entry a backend used last, which it looks at first; events of the lease
 * calls find their entry by role and name, and the expiry, which runs in a
 * worker and does not know the executor's role, by name alone (the entry
 * of that name seen last).  A role sees the entries of the roles whose
 * privileges it has; superusers and pg_monitor see all: an executor's
 * counters say how another role's jobs went.
 *
 * IDENTIFICATION
 *		src/executors.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "jobq.h"
#include "executors.h"

PG_FUNCTION_INFO_V1(jobq_executor_info);

/* an entry not seen for this long is of an executor that is gone */
#define JOBQ_EXECUTOR_GONE_MS	((int64) 3600 * 1000)

/* one executor: a role and the name it gave */
typedef struct JobqExecutor
{
	char		name[NAMEDATALEN];	/* "" while the entry is free */
	Oid			role;
	char		host[NAMEDATALEN];
	int32		pid;
	TimestampTz first_seen;
	TimestampTz last_seen;
	uint64		claimed;
	uint64		succeeded;
	uint64		failed;
	uint64		expired;
} JobqExecutor;

typedef struct JobqExecutorTable
{
	LWLock	   *lock;
	int			size;			/* jobq.max_executors at the server's start */
	JobqExecutor entries[FLEXIBLE_ARRAY_MEMBER];
} JobqExecutorTable;

static JobqExecutorTable *Executors = NULL;

/* the entry this backend used last, looked at first (-1: none) */
static int	last_entry = -1;

#define EXECUTOR_LOCK_TRANCHE "jobq executors"

Size
JobqExecutorsShmemSize(void)
{
	return MAXALIGN(add_size(offsetof(JobqExecutorTable, entries),
							 mul_size(sizeof(JobqExecutor), jobq_max_executors)));
}

/* in the shmem request hook */
void
JobqExecutorsShmemRequest(void)
{
	RequestAddinShmemSpace(JobqExecutorsShmemSize());
	RequestNamedLWLockTranche(EXECUTOR_LOCK_TRANCHE, 1);
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqExecutorsShmemInit(void)
{
	bool		found;

	Executors = ShmemInitStruct("jobq executors", JobqExecutorsShmemSize(), &found);
	if (!found)
	{
		memset(Executors, 0, JobqExecutorsShmemSize());
		Executors->size = jobq_max_executors;
		Executors->lock = &(GetNamedLWLockTranche(EXECUTOR_LOCK_TRANCHE))->lock;
	}
}

/*
 * The entry of role's executor name, made if new and there is room (see
 * the top); NULL if there is none.  Under the lock, exclusive.
 */
static JobqExecutor *
executor_entry(Oid role, const char *name, TimestampTz now)
{
	JobqExecutor *free_entry = NULL;
	JobqExecutor *own_oldest = NULL;
	JobqExecutor *gone = NULL;
	JobqExecutor *e;
	int			own = 0;
	int			i;

	for (i = 0; i < Executors->size; i++)
	{
		e = &Executors->entries[i];
		if (e->name[0] == '\0')
		{
			if (free_entry == NULL)
				free_entry = e;
			continue;
		}
		if (e->role == role)
		{
			if (strcmp(e->name, name) == 0)
				return e;
			own++;
			if (own_oldest == NULL || e->last_seen < own_oldest->last_seen)
				own_oldest = e;
		}
		else if (now - e->last_seen > JOBQ_EXECUTOR_GONE_MS * 1000 &&
				 (gone == NULL || e->last_seen < gone->last_seen))
			gone = e;
	}
	if (own >= jobq_max_executors_per_role)
		e = own_oldest;
	else if (free_entry != NULL)
		e = free_entry;
	else if (gone != NULL)
		e = gone;
	else if (own_oldest != NULL && now - own_oldest->last_seen > JOBQ_EXECUTOR_GONE_MS * 1000)
		e = own_oldest;
	else
		return NULL;
	memset(e, 0, sizeof(JobqExecutor));
	strlcpy(e->name, name, NAMEDATALEN);
	e->role = role;
	e->first_seen = now;
	e->last_seen = now;
	return e;
}

/*
 * The entry that name's expired leases count against: that of the name
 * seen last (the expiry does not know the role).  Under the lock.
 */
static JobqExecutor *
executor_by_name(const char *name)
{
	JobqExecutor *found = NULL;
	int			i;

	for (i = 0; i < Executors->size; i++)
	{
		JobqExecutor *e = &Executors->entries[i];

		if (e->name[0] != '\0' && strcmp(e->name, name) == 0 &&
			(found == NULL || e->last_seen > found->last_seen))
			found = e;
	}
	return found;
}

/*
 * Count n events of the current role's executor name; a claim also
 * records where it runs (host may be NULL and pid 0: as it was).  An
 * expiry, which a worker notes, counts against the name seen last.
 */
void
JobqExecutorNote(const char *name, JobqExecutorEvent event, uint64 n,
				 const char *host, int32 pid)
{
	JobqExecutor *e;
	TimestampTz now = GetCurrentTimestamp();

	if (name == NULL || name[0] == '\0' || Executors == NULL)
		return;
	LWLockAcquire(Executors->lock, LW_EXCLUSIVE);
	if (event == JOBQ_EXEC_EXPIRED)
		e = executor_by_name(name);
	else if (last_entry >= 0 && last_entry < Executors->size &&
			 Executors->entries[last_entry].role == GetUserId() &&
			 strcmp(Executors->entries[last_entry].name, name) == 0)
		e = &Executors->entries[last_entry];	/* most calls: no scan */
	else
	{
		e = executor_entry(GetUserId(), name, now);
		last_entry = e ? (int) (e - Executors->entries) : -1;
	}
	if (e != NULL)
	{
		switch (event)
		{
			case JOBQ_EXEC_CLAIMED:
				e->claimed += n;
				if (host != NULL)
					strlcpy(e->host, host, NAMEDATALEN);
				if (pid != 0)
					e->pid = pid;
				break;
			case JOBQ_EXEC_SEEN:
				break;
			case JOBQ_EXEC_SUCCEEDED:
				e->succeeded += n;
				break;
			case JOBQ_EXEC_FAILED:
				e->failed += n;
				break;
			case JOBQ_EXEC_EXPIRED:
				e->expired += n;
				break;
		}
		if (event != JOBQ_EXEC_EXPIRED)
			e->last_seen = now;
	}
	LWLockRelease(Executors->lock);
}

/*
 * jobq.executor_info(): the executors seen since the server started.
 */
Datum
jobq_executor_info(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqExecutor *copy;
	int			size;
	int			i;

	JobqCheckPreloaded();
	InitMaterializedSRF(fcinfo, 0);
	size = Executors->size;
	copy = palloc(sizeof(JobqExecutor) * size);
	LWLockAcquire(Executors->lock, LW_SHARED);
	memcpy(copy, Executors->entries, sizeof(JobqExecutor) * size);
	LWLockRelease(Executors->lock);

	for (i = 0; i < size; i++)
	{
		JobqExecutor *e = &copy[i];
		Datum		values[10];
		bool		nulls[10];

		if (e->name[0] == '\0')
			continue;
		/* a role sees its own executors; superusers and pg_monitor all */
		if (!has_privs_of_role(GetUserId(), e->role) &&
			!has_privs_of_role(GetUserId(), ROLE_PG_MONITOR))
			continue;
		memset(nulls, false, sizeof(nulls));
		values[0] = CStringGetTextDatum(e->name);
		values[1] = ObjectIdGetDatum(e->role);
		nulls[1] = !OidIsValid(e->role);
		values[2] = CStringGetTextDatum(e->host);
		nulls[2] = (e->host[0] == '\0');
		values[3] = Int32GetDatum(e->pid);
		nulls[3] = (e->pid == 0);
		values[4] = Int64GetDatum((int64) e->claimed);
		values[5] = Int64GetDatum((int64) e->succeeded);
		values[6] = Int64GetDatum((int64) e->failed);
		values[7] = Int64GetDatum((int64) e->expired);
		values[8] = TimestampTzGetDatum(e->first_seen);
		values[9] = TimestampTzGetDatum(e->last_seen);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
