"""`user=none`: no user turn follows the policy's reply, so every episode ends after one policy turn."""


class NoUser:
    def respond(self, conversations: list[list[dict]]) -> list[dict | None]:
        """The user's next message for each conversation; None ends it. Here, always None."""
        return [None] * len(conversations)
