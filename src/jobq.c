/*-------------------------------------------------------------------------
 *
 * jobq.c
 *		Module entry point: GUCs, shared memory and the launcher.
 *
 * Shared memory: each file that keeps shared state owns a piece of it
 * (its ...ShmemSize and ...ShmemInit functions); the hooks here only
 * request the pieces and create them.
 *
 * jobq only works when it is loaded through shared_preload_libraries: the
 * launcher has to be registered by the postmaster and the shared segment
 * sized before it is created.  Loaded any other way (CREATE EXTENSION, or a
 * call into the library from a server that does not preload it), the
 * module refuses with an error that says how to fix the configuration.
 *
 * IDENTIFICATION
 *		src/jobq.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "jobq.h"
#include "executors.h"
#include "depend.h"
#include "floors.h"
#include "journal.h"
#include "lease.h"
#include "prune.h"
#include "requests.h"
#include "slots.h"
#include "wakeup.h"

PG_MODULE_MAGIC;

/* True in every process of a server that preloads jobq. */

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
jobq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(JobqSlotsShmemSize());
	RequestAddinShmemSpace(JobqFloorsShmemSize());
	RequestAddinShmemSpace(JobqWakeupShmemSize());
	RequestAddinShmemSpace(JobqJournalShmemSize());
	RequestAddinShmemSpace(JobqDependShmemSize());
	RequestAddinShmemSpace(JobqPruneShmemSize());
	RequestAddinShmemSpace(JobqRequestsShmemSize());
	RequestAddinShmemSpace(JobqLeaseShmemSize());
	JobqExecutorsShmemRequest();
}

/* at the server's start, and again after a crash */
static void
jobq_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	JobqSlotsShmemInit();
	JobqFloorsShmemInit();
	JobqWakeupShmemInit();
	JobqJournalShmemInit();
	JobqDependShmemInit();
	JobqPruneShmemInit();
	JobqRequestsShmemInit();
	JobqLeaseShmemInit();
	JobqExecutorsShmemInit();
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
	{
		/*
		 * Loaded late, e.g. by CREATE EXTENSION in a server that does not
		 * preload us.  Refuse now; functions that run later in the same
		 * session check jobq_preloaded themselves.
		 */
		JobqCheckPreloaded();
		return;
	}

	jobq_preloaded = true;
	JobqDefineGucs();
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = jobq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = jobq_shmem_startup;
	JobqSchemaInstallHooks();
	JobqRegisterLauncher();
}
