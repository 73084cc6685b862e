from wagtail import hooks


@hooks.register("register_log_actions")
def register_job_actions(actions):
    actions.register_action("stayafrica.job.retry", "Retry job", "Retried a failed background job")
