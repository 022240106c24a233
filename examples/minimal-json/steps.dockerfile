# Extra Dockerfile instructions (Azure ML's extraDockerfileSteps); they run as root.
RUN mkdir -p /var/lib/iris-rules && printf 'petal_length_cm_max_setosa=2.5\n' > /var/lib/iris-rules/rules.env
