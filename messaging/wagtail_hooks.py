from wagtail import hooks


@hooks.register("register_log_actions")
def register_broadcast_action(actions):
    actions.register_action("stayafrica.broadcast.send", "Send broadcast", "Sent a broadcast")
