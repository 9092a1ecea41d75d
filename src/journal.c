/*-------------------------------------------------------------------------
 *
 * journal.c
 *		The attempt each worker is in, kept outside the database.
 *
 * A worker claims jobs with row locks held by the transaction that runs
 * them (claim.c): when a worker dies or the server crashes, that
 * transaction is gone, and its jobs are pending again with nothing to
 * undo.  What a row lock cannot remember is the attempt.  A job that kills
 * its worker, or the whole server, would run again and again.
 *
 * So a worker notes each job it starts (id, attempt number, start time) in
 * its own entry of a small file, jobq.journal in the data directory, and
 * clears the entry when the job is done.  The file is mapped into memory
 * (MAP_SHARED), so noting a job is a store into the page cache, not a
 * system call, and it is never flushed to disk: a crashed server leaves
 * the operating system's page cache intact, and only an operating system
 * crash loses an entry (the job then runs again without that attempt
 * counted).  Entries carry the timeline, so a
 * copy of the file taken by a base backup means nothing after promotion.
 *
 * Settlement turns the entries of workers that are gone into counted
 * attempts (claim.c, JobqCountCrashedAttempts).  Every worker settles once
 * before its first claim, and again before its next claim whenever the
 * launcher has seen a worker die; the shared counters deaths and
 * settled_deaths say when.  A pass takes the entries of slots that are
 * free, of the settling worker itself, and of workers that have not
 * settled yet (those write nothing before they have), all under one
 * LWLock.  Workers take that lock only between execution transactions,
 * holding no row locks, and the settlement skips jobs that are locked (a
 * live worker already runs them again), so it never waits on a job.
 *
 * IDENTIFICATION
 *		src/journal.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/fd.h"
#include "storage/lwlock.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "jobq.h"

#define JOBQ_JOURNAL_FILE		"jobq.journal"
#define JOBQ_JOURNAL_TRANCHE	"jobq journal"

/* One worker slot's entry; job_id 0 means none. */
typedef struct JobqJournalEntry
{
	int64		job_id;
	TimestampTz started_at;
	int32		attempt;
	int32		pid;
	Oid			dboid;
	TimeLineID	tli;
} JobqJournalEntry;

StaticAssertDecl(sizeof(JobqJournalEntry) == 32,
				 "a journal entry must not straddle a page");

#define JOBQ_JOURNAL_SIZE		(JOBQ_MAX_WORKERS * sizeof(JobqJournalEntry))

/* the file, mapped */
static JobqJournalEntry *journal = NULL;

void
JobqJournalShmemRequest(void)
{
	RequestNamedLWLockTranche(JOBQ_JOURNAL_TRANCHE, 1);
}

/* close a descriptor without losing the errno of the failure at hand */
static void
close_keeping_errno(int fd)
{
	int			save_errno = errno;

	close(fd);
	errno = save_errno;
}

static JobqJournalEntry *
journal_map(void)
{
	int			fd;
	void	   *p;
	struct stat st;

	if (journal != NULL)
		return journal;

	fd = BasicOpenFilePerm(JOBQ_JOURNAL_FILE, O_RDWR | O_CREAT | PG_BINARY,
						   pg_file_create_mode);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", JOBQ_JOURNAL_FILE)));
	/* a new file is extended with zeroes: no entries */
	if (fstat(fd, &st) != 0 ||
		(st.st_size < (off_t) JOBQ_JOURNAL_SIZE &&
		 ftruncate(fd, (off_t) JOBQ_JOURNAL_SIZE) != 0))
	{
		close_keeping_errno(fd);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not size file \"%s\": %m", JOBQ_JOURNAL_FILE)));
	}
	p = mmap(NULL, JOBQ_JOURNAL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	/* the mapping stays valid after the descriptor is closed */
	close_keeping_errno(fd);
	if (p == MAP_FAILED)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not map file \"%s\": %m", JOBQ_JOURNAL_FILE)));
	journal = (JobqJournalEntry *) p;
	return journal;
}

/*
 * Note that this worker starts an attempt at a job.  The id goes in last,
 * so an entry with an id is complete.
 */
void
JobqJournalBegin(int slot, const JobqJob *job, TimestampTz started)
{
	JobqJournalEntry *e = &journal_map()[slot];

	e->job_id = 0;
	pg_write_barrier();
	e->started_at = started;
	e->attempt = job->attempts;
	e->pid = MyProcPid;
	e->dboid = MyDatabaseId;
	e->tli = GetWALInsertionTimeLine();
	pg_write_barrier();
	e->job_id = job->id;
}

/*
 * The attempt is over (whatever its outcome, which the execution
 * transaction records): clear the entry.
 */
void
JobqJournalEnd(int slot)
{
	journal_map()[slot].job_id = 0;
}

/*
 * A settlement pass; see the header comment.  Runs transactions of its
 * own, so it must be called outside one.
 */
void
JobqJournalSettle(int slot)
{
	LWLock	   *lock = &(GetNamedLWLockTranche(JOBQ_JOURNAL_TRANCHE))->lock;
	JobqJournalEntry entries[JOBQ_MAX_WORKERS];
	bool		take[JOBQ_MAX_WORKERS];
	int64		ids[JOBQ_MAX_WORKERS];
	int32		attempts[JOBQ_MAX_WORKERS];
	TimestampTz started[JOBQ_MAX_WORKERS];
	int32		pids[JOBQ_MAX_WORKERS];
	TimeLineID	tli = GetWALInsertionTimeLine();
	uint32		deaths;
	int			n = 0;
	int			i;

	LWLockAcquire(lock, LW_EXCLUSIVE);

	SpinLockAcquire(&JobqShared->mutex);
	deaths = JobqShared->deaths;
	if (JobqShared->workers[slot].settled &&
		JobqShared->settled_deaths == deaths)
	{
		/* another worker did it while we waited for the lock */
		SpinLockRelease(&JobqShared->mutex);
		LWLockRelease(lock);
		return;
	}
	SpinLockRelease(&JobqShared->mutex);

	memcpy(entries, journal_map(), sizeof(entries));

	SpinLockAcquire(&JobqShared->mutex);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		JobqWorkerSlot *s = &JobqShared->workers[i];

		take[i] = entries[i].job_id != 0 &&
			(i == slot || s->pid == 0 || !s->settled);
	}
	SpinLockRelease(&JobqShared->mutex);

	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		if (!take[i])
			continue;
		/* entries of another database or timeline are only cleared */
		if (entries[i].dboid != MyDatabaseId || entries[i].tli != tli)
			continue;
		ids[n] = entries[i].job_id;
		attempts[n] = entries[i].attempt;
		started[n] = entries[i].started_at;
		pids[n] = entries[i].pid;
		n++;
	}

	if (n > 0)
	{
		MemoryContext oldcxt = CurrentMemoryContext;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		(void) JobqCountCrashedAttempts(n, ids, attempts, started, pids);
		CommitTransactionCommand();
		MemoryContextSwitchTo(oldcxt);
	}

	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		bool		clear;

		if (!take[i])
			continue;
		/* a slot taken meanwhile belongs to a worker that has not settled */
		SpinLockAcquire(&JobqShared->mutex);
		clear = (i == slot || JobqShared->workers[i].pid == 0 ||
				 !JobqShared->workers[i].settled);
		SpinLockRelease(&JobqShared->mutex);
		if (clear)
			JobqJournalEnd(i);
	}

	SpinLockAcquire(&JobqShared->mutex);
	JobqShared->workers[slot].settled = true;
	if ((int32) (deaths - JobqShared->settled_deaths) > 0)
		JobqShared->settled_deaths = deaths;
	SpinLockRelease(&JobqShared->mutex);

	LWLockRelease(lock);
}
